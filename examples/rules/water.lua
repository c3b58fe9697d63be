-- examples/rules/water.lua - water supply: pressure, reservoirs, pumps.
-- Metrics: water_pressure_bar, water_flow_m3h, water_level_m, water_pump_on; labels ward,
-- device.

rule "water_pressure_low" {
  select = 'water_pressure_bar',
  window = "2m",
  when = "avg < 1.5",
  clear = "avg > 1.8",
  hold = "1m",
  keep = "2m",                   -- stay open a little after recovery: mains refill slowly
  severity = "critical",
  domain = "water",
  group_by = { "ward" },         -- one incident per ward, not one per sensor
  summary = "Low water pressure in {{ward}}",
  description = "Average pressure {{value|%.2f}} bar over 2 minutes (normal: 2.0-2.8 bar).",
  runbook = "https://wiki.ioc.example/runbooks/water-pressure",
}

rule "reservoir_low" {
  select = 'water_level_m',
  when = "value < 1.0",
  clear = "value > 1.3",
  hold = "5m",
  severity = "warning",
  domain = "water",
  group_by = { "ward", "device" },
  summary = "Reservoir {{device}} in {{ward}} at {{value|%.2f}} m",
}

record "ward:water_pressure_bar:avg" {
  expr = 'avg by (ward) (water_pressure_bar)',
  every = "30s",
}
