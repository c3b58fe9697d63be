-- iocd.example.lua - an example config file for `iocd serve --config iocd.example.lua`.
-- The file is Lua: it returns one table. It runs in the same sandbox as alert rules (no io,
-- os, require or load), so it can compute values but cannot touch the machine.
-- Every key is optional; a command-line flag always wins over the same key here.
-- Unknown keys and wrong types stop the daemon with FILE:LINE and the key's name.
-- Reference: docs/CONFIG.md.

local ward_gateway_secret = "change-me-gateway-0123456789"

return {
  data_dir = "./data",             -- where iocd.mdb lives
  http = "127.0.0.1:9470",         -- API, console and /metrics ("" disables)
  influx_tcp = "127.0.0.1:8094",   -- line protocol over TCP ("" disables)
  influx_udp = "127.0.0.1:8089",   -- line protocol over UDP ("" disables)
  rules = "examples/rules",        -- a rule file or a directory of them
  kafka_brokers = "mock",          -- "host:9092,host2:9092", "mock" or "" (no dispatch)

  log_level = "info",              -- debug | info | warn | error
  log_format = "logfmt",           -- logfmt | json

  sync = "always",                 -- fsync before acknowledging, or a window like "100ms"
  retention = "90d",               -- raw samples are kept this long
  rollup_retention = "2y",         -- 5-minute and 1-hour rollups are kept this long

  http_timeout = "60s",            -- idle HTTP connections are closed after this
  http_body_max = "64MiB",         -- largest request body
  http_threads = 2,
  http_conn_max = 1024,
  line_max = "256KiB",             -- longest line-protocol line
  shutdown_timeout = "10s",

  -- Bearer tokens. When any is set, every endpoint but /-/healthy and /-/ready needs one:
  -- read (queries, /metrics), write (ingest), admin (everything, incl. deletes and reload).
  tokens = {
    { name = "grafana", token = "change-me-read-0123456789", role = "read" },
    { name = "gateways", token = ward_gateway_secret, role = "write" },
    { name = "ops", token = "change-me-admin-0123456789", role = "admin" },
  },

  -- Passed as-is to librdkafka (https://github.com/confluentinc/librdkafka CONFIGURATION.md).
  kafka = {
    ["message.timeout.ms"] = 300000,
    -- ["security.protocol"] = "SASL_SSL",
    -- ["sasl.mechanisms"] = "PLAIN",
  },
}
