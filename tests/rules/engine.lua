-- tests/rules/engine.lua - rules for the engine's own tests (tests/rules/engine_test.lua):
-- instances that come and go often, and groups that several series join and leave.

rule "level_high" {
  select = 'level',
  when = "value > 10",
  severity = "warning",
  domain = "drainage",
  group_by = { "ward" },
  summary = "Level high in {{ward}}",
}

rule "level_silent" {
  select = 'level',
  absent = "3m",
  severity = "info",
  domain = "drainage",
  group_by = { "ward", "device" },
  summary = "{{device}} silent",
}
