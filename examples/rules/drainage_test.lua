-- examples/rules/drainage_test.lua

test "a drain over 2.5 m fires at once and clears below 2.2 m" {
  interval = "1m",
  series = { { 'drainage_level_m{ward="gia_sang",device="dr-7"}', "2.35x9 2.6 2.4x1 2.0x4" } },
  alerts = {
    { at = "9m", firing = {} },
    { at = "10m", firing = { { alertname = "drain_overflow_risk", device = "dr-7" } } },
    { at = "12m", firing = { { alertname = "drain_overflow_risk" } } },  -- 2.4 m: not yet
    { at = "15m", firing = {} },
  },
}

test "a fast rise is noticed before the level is high" {
  interval = "1m",
  series = { { 'drainage_level_m{ward="phu_xa",device="dr-2"}', "0.5x5 0.5+0.1x6" } },
  alerts = {
    { at = "5m", firing = {} },
    { at = "11m", firing = { { alertname = "drain_rising_fast", device = "dr-2" } } },
  },
}

test "pumps off while the water is high" {
  interval = "30s",
  series = {
    { 'drainage_level_m{ward="tan_lap",device="dr-9"}', "2.2x8" },
    { 'drainage_pump_on{ward="tan_lap",device="pump-9"}', "1x2 0x6" },
  },
  alerts = {
    { at = "1m", firing = {} },
    { at = "3m", firing = { { alertname = "drain_pump_off_while_high", ward = "tan_lap" } } },
  },
}
