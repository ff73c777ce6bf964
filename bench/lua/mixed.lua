-- A slave's realistic mix: wrk ... -s mixed.lua URL -- HITS MISS_OFFSET MISS_COUNT UNKNOWN_OFFSET
-- Of every 100 requests, 98 cycle through the cached keys 0 .. HITS-1 (as redirect.lua does), one is a
-- miss: the next key of MISS_OFFSET .. MISS_OFFSET+MISS_COUNT-1 (keys the master holds and the slave has
-- never been asked for, each requested once), and one is an unknown key: base 62 of UNKNOWN_OFFSET+n,
-- a key nobody holds (404 from goto-tw, 500 from Go's goto: wrk counts those as non-2xx/3xx).
-- Globals summed by report.lua: `issued` (all requests), `misses` (fresh miss keys requested, so the
-- next run starts after them), `unknowns` (unknown keys requested), `stale` (misses requested after
-- MISS_COUNT ran out: those were cache hits, and the run is not the mix it claims).
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local report = require("report")
local keys = require("keys")

local hits, miss_offset, miss_count, unknown_offset
local position = 0
local hit_position = 0
issued = 0
misses = 0
unknowns = 0
stale = 0

function init(args)
  hits = tonumber(args[1])
  miss_offset = tonumber(args[2])
  miss_count = tonumber(args[3])
  unknown_offset = tonumber(args[4])
end

local function next_hit()
  local key = keys.key_for_index(hit_position % hits)
  hit_position = hit_position + 1
  if keys.RESERVED[key] then
    return keys.key_for_index(0)
  end
  return key
end

local function next_miss()
  while misses < miss_count do
    local key = keys.key_for_index(miss_offset + misses)
    misses = misses + 1
    if not keys.RESERVED[key] then
      return key
    end
  end
  stale = stale + 1
  return next_hit()
end

function request()
  position = position + 1
  issued = position
  local slot = position % 100
  local key
  if slot == 50 then
    key = next_miss()
  elseif slot == 0 then
    key = keys.key_for_index(unknown_offset + unknowns)
    unknowns = unknowns + 1
  else
    key = next_hit()
  end
  return wrk.format("GET", "/" .. key)
end

setup = report.setup
done = report.done
