-- wrk script: post.lua, plus a pause after every answer, which holds the load at a
-- moderate rate (connections x 1000 / (pause + latency) requests per second) so the
-- latency measured has no queueing in it. A script of its own because wrk schedules
-- every request through a timer once a script defines delay().
-- Usage: wrk ... -s post-paced.lua <url> -- <body-file> @delay=MS [header=value ...]

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "post.lua")

function delay()
  return pause or 0
end
