-- examples/rules/cameras.lua - surveillance cameras: offline, degraded video, silent devices.
-- Metrics (from the city's camera gateways): camera_online (1/0), camera_fps,
-- camera_bitrate_kbps, labelled ward, device.

rule "camera_offline" {
  select = 'camera_online',
  when = "value < 1",
  hold = "30s",                  -- a reboot takes ~20 s: do not page for it
  severity = "warning",
  domain = "cameras",
  group_by = { "ward", "device" },
  summary = "Camera {{device}} offline in {{ward}}",
  description = "The camera reports offline. Check power and the uplink at the pole.",
  runbook = "https://wiki.ioc.example/runbooks/camera-offline",
}

rule "camera_low_fps" {
  select = 'camera_fps',
  window = "1m",
  when = "avg < 10",
  clear = "avg > 15",            -- hysteresis: no flapping around 10 fps
  hold = "1m",
  severity = "info",
  domain = "cameras",
  group_by = { "ward", "device" },
  summary = "Camera {{device}} in {{ward}} streams at {{value|%.0f}} fps",
}

rule "camera_silent" {
  select = 'camera_fps',
  absent = "2m",                 -- nothing at all for 2 minutes: gateway or network down
  severity = "warning",
  domain = "cameras",
  group_by = { "ward", "device" },
  summary = "Camera {{device}} in {{ward}} sends no data",
}
