-- examples/rules/water_test.lua

test "a pressure drop in a ward is one incident, kept 2 minutes after recovery" {
  interval = "30s",
  series = {
    { 'water_pressure_bar{ward="phan_dinh_phung",device="ps-01"}', "2.4x3 1.1x8 2.4x12" },
    { 'water_pressure_bar{ward="phan_dinh_phung",device="ps-02"}', "2.5x3 1.2x8 2.5x12" },
    { 'water_pressure_bar{ward="tan_thinh",device="ps-03"}', "2.5x23" },
  },
  alerts = {
    { at = "1m", firing = {} },
    { at = "4m", pending = { { alertname = "water_pressure_low", ward = "phan_dinh_phung" } } },
    { at = "5m", firing = { { alertname = "water_pressure_low", ward = "phan_dinh_phung",
                              severity = "critical", domain = "water" } } },
    { at = "7m", firing = { { alertname = "water_pressure_low" } } },   -- kept
    { at = "10m", firing = {} },
  },
}

test "a value dancing around the threshold does not flap" {
  interval = "1m",
  series = { { 'water_level_m{ward="phu_xa",device="res-2"}', "0.9x6 1.1 0.95 1.05 0.98 1.4x3" } },
  alerts = {
    { at = "6m", firing = { { alertname = "reservoir_low", device = "res-2" } } },
    { at = "9m", firing = { { alertname = "reservoir_low", device = "res-2" } } },
    { at = "12m", firing = {} },
  },
}
