-- examples/rules/lighting.lua - street lighting: lamps dark at night, failing lamps.
-- Metrics: lighting_on (1/0), lighting_power_w, lighting_lux; labels ward, device.
-- Night is computed from the city's latitude and longitude (--latitude, --longitude) in local
-- time (--timezone): ctx:is_dark(20) is true from 20 minutes after sunset to 20 minutes
-- before sunrise.

rule "street_light_off_at_night" {
  select = 'lighting_on',
  when = function(s, ctx) return s.value < 1 and ctx:is_dark(20) end,
  clear = function(s, ctx) return s.value >= 1 or not ctx:is_dark(20) end,
  hold = "2m",
  severity = "warning",
  domain = "lighting",
  group_by = { "ward", "device" },
  summary = "Street light {{device}} is off after dark in {{ward}}",
  runbook = "https://wiki.ioc.example/runbooks/street-light",
}

rule "lamp_failing" {
  select = 'lighting_power_w',
  window = "5m",
  -- switched on but drawing far less than a working 120 W lamp
  when = function(s) return s.samples >= 3 and s.max > 0 and s.avg < 60 end,
  clear = function(s) return s.avg > 90 or s.max == 0 end,
  severity = "info",
  domain = "lighting",
  group_by = { "ward", "device" },
  summary = "Lamp {{device}} in {{ward}} draws only {{value|%.0f}} W",
}

rule "ward_power_cut" {
  select = 'power_feed_on',      -- the ward substation's feed (1 on, 0 off)
  when = "value < 1",
  severity = "critical",
  domain = "emergency",
  group_by = { "ward" },
  summary = "Power cut in {{ward}}",
  -- While a ward has no power, its dark lamps and offline cameras are this one problem:
  -- they open no incidents of their own.
  inhibits = {
    match = '{alertname=~"street_light_off_at_night|lamp_failing|camera_offline|camera_low_fps|camera_silent"}',
    equal = { "ward" },
  },
}
