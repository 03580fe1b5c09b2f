-- State: sweep expired holds, then read the total held, lambda and the given spent counters.
-- KEYS[4] the pace hash, KEYS[5..] spent counters. ARGV: now_ms.
-- Returns {total held, lambda, spent...}.

repair_holds()
sweep_holds(ARGV[1])

local out = {held_total(), redis.call('HGET', KEYS[4], 'lambda') or '0'}
for _, v in ipairs(read_counters(5, #KEYS - 4)) do
  out[#out + 1] = v
end
return out
