-- goto's keys, shared by the bench scripts: base 62 of an index (goto_tw.keys.key_for_index), and the
-- paths goto answers itself (goto_tw.keys.RESERVED_SEGMENTS: "add", "api"...), which are never keys.
local keys = {}

local ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

function keys.key_for_index(index)
  if index == 0 then
    return "0"
  end
  local digits = {}
  while index > 0 do
    local digit = index % 62
    table.insert(digits, 1, ALPHABET:sub(digit + 1, digit + 1))
    index = (index - digit) / 62
  end
  return table.concat(digits)
end

keys.RESERVED = { add = true, api = true, RPC2 = true, health = true, metrics = true, static = true }

return keys
