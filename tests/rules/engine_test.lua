-- tests/rules/engine_test.lua - the engine keeps each series' instances in a cache; these cases
-- move instances under it: one that resolves and fires again, series that join a group another
-- series opened, and one whose group is freed while its neighbour keeps it open.

test "an alert that resolves and fires again, many times, follows every change" {
  interval = "1m",
  series = { { 'level{ward="a",device="d1"}', "5 12 5 12 5 12 5 5" } },
  alerts = {
    { at = "0m", firing = {} },
    { at = "1m", firing = { { alertname = "level_high", ward = "a" } } },
    { at = "2m", firing = {} },
    { at = "3m", firing = { { alertname = "level_high", ward = "a" } } },
    { at = "4m", firing = {} },
    { at = "5m", firing = { { alertname = "level_high", ward = "a" } } },
    { at = "6m", firing = {} },
  },
}

test "series join a group another series opened, and it clears when the last leaves" {
  interval = "1m",
  series = {
    { 'level{ward="b",device="d1"}', "5 12 12 12 5 5 5" },
    { 'level{ward="b",device="d2"}', "5 5 12 12 12 5 5" },
    { 'level{ward="c",device="d3"}', "5 5 5 12 5 5 5" },
  },
  alerts = {
    { at = "1m", firing = { { alertname = "level_high", ward = "b" } } },
    { at = "3m", firing = { { alertname = "level_high", ward = "b" },
                            { alertname = "level_high", ward = "c" } } },
    { at = "4m", firing = { { alertname = "level_high", ward = "b" } } },   -- d2 holds it
    { at = "5m", firing = {} },
  },
}

test "a device that stops is reported silent, and speaks again" {
  interval = "1m",
  series = {
    { 'level{ward="e",device="d4"}', "5x2 _x4 5x3" },
    { 'level{ward="e",device="d5"}', "5x9" },
  },
  alerts = {
    { at = "2m", firing = {} },
    { at = "6m", firing = { { alertname = "level_silent", device = "d4" } } },
    { at = "8m", firing = {} },
  },
}
