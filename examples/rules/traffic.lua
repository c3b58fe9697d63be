-- examples/rules/traffic.lua - junctions: jams, dead counters, congested wards.
-- Metrics: traffic_avg_speed_kmh, traffic_occupancy_pct, traffic_vehicles_total (a counter);
-- labels ward, device.

rule "junction_jam" {
  select = 'traffic_avg_speed_kmh',
  window = "5m",
  when = "avg < 10",
  clear = "avg > 15",
  hold = "2m",
  severity = "warning",
  domain = "traffic",
  group_by = { "ward", "device" },
  summary = "Junction {{device}} in {{ward}} is jammed ({{value|%.1f}} km/h over 5 minutes)",
}

rule "traffic_counter_silent" {
  select = 'traffic_vehicles_total',
  absent = "5m",
  severity = "info",
  domain = "traffic",
  group_by = { "ward", "device" },
  summary = "Traffic counter {{device}} in {{ward}} sends nothing",
}

-- A PromQL rule, as engineers bring them from Prometheus: checked every 30 s.
rule "ward_congested" {
  expr = 'avg by (ward) (traffic_occupancy_pct) > 70',
  every = "30s",
  hold = "2m",
  severity = "warning",
  domain = "traffic",
  summary = "Ward {{ward}} congested: {{value|%.0f}}% average occupancy",
}
