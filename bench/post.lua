-- wrk script: POSTs one body file with the given headers, and prints a JSON summary
-- line (prefixed "BENCH_JSON ") that bench/run.py parses instead of wrk's text.
-- Usage: wrk ... -s post.lua <url> -- <body-file> [header=value ...]

function init(args)
  local f = assert(io.open(args[1], "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["content-type"] = "application/json"
  for i = 2, #args do
    local k, v = string.match(args[i], "^([^=]+)=(.*)$")
    if k == "@delay" then
      pause = tonumber(v) -- read by post-paced.lua
    elseif k then
      wrk.headers[k] = v
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"lat_mean_us":%.1f,"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d,"lat_max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
