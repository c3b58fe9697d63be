-- examples/rules/drainage.lua - drainage: drains about to overflow, fast rises, dead pumps.
-- Metrics: drainage_level_m (water level in a drain or canal), drainage_pump_on;
-- labels ward, device.

rule "drain_overflow_risk" {
  select = 'drainage_level_m',
  window = "2m",
  when = "max > 2.5",
  clear = "max < 2.2",
  severity = "critical",
  domain = "drainage",
  group_by = { "ward", "device" },
  summary = "Drain {{device}} in {{ward}} near overflow ({{value|%.2f}} m)",
  runbook = "https://wiki.ioc.example/runbooks/drain-overflow",
}

rule "drain_rising_fast" {
  select = 'drainage_level_m',
  window = "10m",
  -- more than 30 cm in 10 minutes, with enough readings to trust it
  when = function(s) return s.samples >= 5 and s.delta > 0.3 end,
  clear = function(s) return s.delta < 0.1 end,
  severity = "warning",
  domain = "drainage",
  group_by = { "ward", "device" },
  summary = "Drain {{device}} in {{ward}} rising fast",
}

rule "drain_pump_off_while_high" {
  expr = 'max by (ward) (drainage_level_m) > 2.0 and on(ward) max by (ward) (drainage_pump_on) < 1',
  every = "30s",
  hold = "1m",
  severity = "critical",
  domain = "drainage",
  summary = "Drain pumps off in {{ward}} while water is high",
}
