-- examples/rules/lighting_test.lua

test "a lamp off after sunset fires; the same lamp off at noon does not" {
  start = "2026-11-24T18:00:00+07:00",   -- after sunset in Thai Nguyen (about 17:15)
  interval = "1m",
  series = {
    { 'lighting_on{ward="phu_xa",device="sl-0101"}', "1 1 0x4 1x2" },
    { 'lighting_on{ward="phu_xa",device="sl-0102"}', "1x8" },
  },
  alerts = {
    { at = "3m", pending = { { alertname = "street_light_off_at_night", device = "sl-0101" } } },
    { at = "5m", firing = { { alertname = "street_light_off_at_night", device = "sl-0101",
                              ward = "phu_xa" } } },
    { at = "7m", firing = {} },
  },
}

test "daytime: lamps are off on purpose" {
  start = "2026-11-24T12:00:00+07:00",
  interval = "1m",
  series = { { 'lighting_on{ward="phu_xa",device="sl-0101"}', "0x10" } },
  alerts = { { at = "10m", firing = {} } },
}

test "a lamp drawing 40 W of its 120 W is failing" {
  interval = "1m",
  series = { { 'lighting_power_w{ward="gia_sang",device="sl-0200"}', "120x3 40x6 120x6" } },
  alerts = {
    { at = "3m", firing = {} },
    { at = "8m", firing = { { alertname = "lamp_failing", device = "sl-0200" } } },
    { at = "15m", firing = {} },
  },
}

test "a power cut fires at once for its ward" {
  interval = "1m",
  series = {
    { 'power_feed_on{ward="tan_thinh",device="sub-3"}', "1 1 0x3 1" },  -- off from 2 to 5 min
  },
  alerts = {
    { at = "1m", firing = {} },
    { at = "2m", firing = { { alertname = "ward_power_cut", ward = "tan_thinh", severity = "critical" } } },
    { at = "5m", firing = { { alertname = "ward_power_cut" } } },
    { at = "6m", firing = {} },
  },
}
