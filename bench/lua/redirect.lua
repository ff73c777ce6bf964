-- GET /KEY over a range of keys: wrk ... -s redirect.lua URL -- COUNT [OFFSET [once]]
-- Keys are goto's: base 62 of the indexes OFFSET .. OFFSET+COUNT-1 (goto_tw.keys.key_for_index).
-- Default: cycle through them for as long as wrk runs. With "once": request each key once, in order,
-- then keep requesting the first one (counted in `issued`, the number of distinct keys requested).
-- Keys that are paths goto answers itself (goto_tw.keys.RESERVED_SEGMENTS: "add", "api"...) are never
-- stored by goto; the first key is requested in their place.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local report = require("report")

local keys = require("keys")
local key_for_index = keys.key_for_index
local RESERVED = keys.RESERVED

local count, offset, once
local position = 0
issued = 0

function init(args)
  count = tonumber(args[1])
  offset = tonumber(args[2] or "0")
  once = args[3] == "once"
end

function request()
  local index
  if once and position >= count then
    index = offset
  else
    index = offset + position % count
    position = position + 1
    issued = math.min(position, count)
  end
  local key = key_for_index(index)
  if RESERVED[key] then
    key = key_for_index(offset)
  end
  return wrk.format("GET", "/" .. key)
end

setup = report.setup
done = report.done
