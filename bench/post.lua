-- wrk script: POSTs one body file with the given headers, and prints a JSON summary
-- line (prefixed "BENCH_JSON ") that bench/run.py parses instead of wrk's text.
-- Usage: wrk ... -s post.lua <url> -- <body-file> [header=value ...]
--        [@rotate=header=v1,v2,...]
-- @rotate: each request carries the next value of that header, in turn (the requests
-- are formatted once, in init; only then does wrk call request() for every request).

function init(args)
  local rotate_name, rotate_values
  local f = assert(io.open(args[1], "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["content-type"] = "application/json"
  for i = 2, #args do
    local k, v = string.match(args[i], "^([^=]+)=(.*)$")
    if k == "@delay" then
      pause = tonumber(v) -- read by post-paced.lua
    elseif k == "@rotate" then
      rotate_name, v = string.match(v, "^([^=]+)=(.*)$")
      rotate_values = {}
      for value in string.gmatch(v, "[^,]+") do
        rotate_values[#rotate_values + 1] = value
      end
    elseif k then
      wrk.headers[k] = v
    end
  end
  if rotate_name then
    local reqs = {}
    for i, value in ipairs(rotate_values) do
      wrk.headers[rotate_name] = value
      reqs[i] = wrk.format()
    end
    local n, i = #reqs, 0
    -- A global request() makes wrk ask it for every request.
    function request()
      i = i % n + 1
      return reqs[i]
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
