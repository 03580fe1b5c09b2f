-- State: sweep expired holds, then read the total held and the given spent counters.
-- KEYS[4..] spent counters. ARGV: now_ms. Returns {total held, spent...}.

repair_holds()
sweep_holds(ARGV[1])

local out = {held_total()}
for _, v in ipairs(read_counters(4, #KEYS - 3)) do
  out[#out + 1] = v
end
return out
