-- examples/rules/traffic_test.lua

test "a jam fires once the 5 minute average falls below 10 km/h for 2 minutes" {
  interval = "1m",
  series = { { 'traffic_avg_speed_kmh{ward="hoang_van_thu",device="tc-12"}',
               "40x4 5x10 40x8" } },
  alerts = {
    { at = "5m", firing = {} },
    { at = "11m", pending = { { alertname = "junction_jam", device = "tc-12" } } },
    { at = "12m", firing = { { alertname = "junction_jam", device = "tc-12" } } },
    { at = "22m", firing = {} },
  },
}

test "a ward whose junctions are over 70% occupied for 2 minutes is congested" {
  interval = "30s",
  series = {
    { 'traffic_occupancy_pct{ward="quang_trung",device="tc-1"}', "30x3 90x10" },
    { 'traffic_occupancy_pct{ward="quang_trung",device="tc-2"}', "30x3 80x10" },
    { 'traffic_occupancy_pct{ward="gia_sang",device="tc-3"}', "30x13" },
  },
  alerts = {
    { at = "1m30s", firing = {} },
    { at = "4m30s", firing = { { alertname = "ward_congested", ward = "quang_trung" } } },
  },
}

test "a counter that stops is noticed after 5 minutes" {
  interval = "1m",
  series = { { 'traffic_vehicles_total{ward="phu_xa",device="tc-40"}', "100+20x4" } },
  alerts = {
    { at = "6m", firing = {} },
    { at = "10m", firing = { { alertname = "traffic_counter_silent", device = "tc-40" } } },
  },
}
