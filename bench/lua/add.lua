-- POST /add with a URL never sent before: wrk ... -s add.lua URL -- NONCE
-- Each body is url=http://bench.example/NONCE-COUNTER-RANDOM (form-encoded); NONCE is unique per run.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local report = require("report")

local nonce
local counter = 0
issued = 0
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }

function init(args)
  nonce = args[1]
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16))
end

function request()
  counter = counter + 1
  issued = counter
  local body = string.format("url=http%%3A%%2F%%2Fbench.example%%2F%s-%d-%d", nonce, counter, math.random(1, 1000000000))
  return wrk.format("POST", "/add", headers, body)
end

setup = report.setup
done = report.done
