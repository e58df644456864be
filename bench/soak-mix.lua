-- wrk script of the soak (bench/soak.py): a mix of requests, sent in turn on every
-- connection, each answer checked, and a JSON summary line (prefixed "SOAK_JSON ")
-- that soak.py parses instead of wrk's text.
--
-- Usage: wrk ... -s soak-mix.lua <url> -- [@delay=MS] @req=<body-file> [header=value ...]
--        [@req=<body-file> [header=value ...] ...]
-- Each @req starts a request of the mix (POST of the body file, content-type JSON);
-- the header=value arguments after it are its headers. @delay=MS pauses every
-- connection MS after each answer (a steady, moderate rate); without it wrk sends
-- back to back.
--
-- An answer is bad when its status is not 200, its body holds no "choices" (every
-- OpenAI chat answer, JSON or SSE, has them), or it is an SSE answer that does not
-- end with `data: [DONE]`. wrk counts statuses >= 400 itself (err_status); `bad`
-- counts every bad answer, those included.

local reqs = {}
local idx = 0
bad = 0
bad_sample = ""

function init(args)
  local cur
  local specs = {}
  for i = 1, #args do
    local k, v = string.match(args[i], "^([^=]+)=(.*)$")
    if k == "@delay" then
      local pause = tonumber(v) or 0
      if pause > 0 then
        -- Defined only when asked for: once a script has delay(), wrk sends every
        -- request through a timer.
        function delay()
          return pause
        end
      end
    elseif k == "@req" then
      local f = assert(io.open(v, "rb"))
      cur = {body = f:read("*a"), headers = {["content-type"] = "application/json"}}
      f:close()
      table.insert(specs, cur)
    elseif k and cur then
      cur.headers[k] = v
    end
  end
  assert(#specs > 0, "soak-mix.lua: no @req given")
  for i, s in ipairs(specs) do
    reqs[i] = wrk.format("POST", nil, s.headers, s.body)
  end
  -- Threads start at different places in the mix.
  idx = math.random(#reqs) - 1
end

function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end

function response(status, headers, body)
  local ok = status == 200 and body ~= nil and string.find(body, "choices", 1, true) ~= nil
  if ok then
    local ctype = headers["content-type"] or headers["Content-Type"] or ""
    if string.find(ctype, "text/event-stream", 1, true) then
      ok = string.find(body, "data: [DONE]", 1, true) ~= nil
    end
  end
  if not ok then
    bad = bad + 1
    if bad_sample == "" then
      bad_sample = string.format("status %d: %s", status, string.sub(body or "", 1, 200))
    end
  end
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local function json_string(s)
  s = string.gsub(s, '[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. s .. '"'
end

function done(summary, latency, requests)
  local nbad, sample = 0, ""
  for _, t in ipairs(threads) do
    nbad = nbad + (t:get("bad") or 0)
    local s = t:get("bad_sample") or ""
    if sample == "" then
      sample = s
    end
  end
  local e = summary.errors
  io.write(string.format(
    'SOAK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"bad":%d,"bad_sample":%s,' ..
    '"lat_mean_us":%.1f,"lat_p50_us":%d,"lat_p99_us":%d,"lat_max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout, nbad, json_string(sample),
    latency.mean, latency:percentile(50), latency:percentile(99), latency.max))
end
