-- Release: drop a live hold without charging (the request failed or was cancelled).
-- A settled or unknown request is left alone. KEYS[4] the request's record.
-- ARGV: request_id. Returns 1 if a hold was dropped, else 0.

local RECORD = KEYS[4]
local id = ARGV[1]

repair_holds()

if redis.call('HGET', RECORD, 'state') ~= 'held' then
  return 0
end
redis.call('HSET', RECORD, 'state', 'released')
if drop_hold(id) then
  return 1
end
return 0
