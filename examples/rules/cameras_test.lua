-- examples/rules/cameras_test.lua - run: iocd rules test examples/rules/cameras_test.lua

test "an offline camera pages after 30 s, and clears when it is back" {
  interval = "10s",
  series = {
    { 'camera_online{ward="phan_dinh_phung",device="cam-001"}', "1 1 0x5 1x3" },
    { 'camera_online{ward="phan_dinh_phung",device="cam-002"}', "1x10" },
  },
  alerts = {
    { at = "10s", firing = {} },
    { at = "40s", pending = { { alertname = "camera_offline", device = "cam-001" } } },
    { at = "50s", firing = { { alertname = "camera_offline", device = "cam-001",
                               ward = "phan_dinh_phung", severity = "warning", domain = "cameras" } } },
    { at = "80s", firing = {} },
  },
}

test "a reboot shorter than the hold never fires" {
  interval = "10s",
  series = { { 'camera_online{ward="gia_sang",device="cam-007"}', "1 0 0 1x5" } },
  alerts = {
    { at = "20s", firing = {} },
    { at = "60s", firing = {} },
  },
}

test "low fps uses the 1 minute average and clears only above 15" {
  interval = "10s",
  series = { { 'camera_fps{ward="quang_trung",device="cam-003"}', "25x5 5x12 12x6 20x6" } },
  alerts = {
    { at = "1m", firing = {} },
    { at = "3m", firing = { { alertname = "camera_low_fps", device = "cam-003" } } },
    { at = "4m", firing = { { alertname = "camera_low_fps" } } },  -- 12 fps: not cleared yet
    { at = "5m30s", firing = {} },
  },
}

test "a camera that stops sending is noticed after 2 minutes" {
  interval = "10s",
  series = { { 'camera_fps{ward="tan_thinh",device="cam-009"}', "25x3" } },
  alerts = {
    { at = "1m", firing = {} },
    { at = "2m40s", firing = { { alertname = "camera_silent", device = "cam-009" } } },
  },
}
