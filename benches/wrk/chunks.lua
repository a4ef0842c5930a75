-- wrk script: POST /v1/chunks, each body FRAMES frames of CHUNK bytes
-- (16-byte stream id, u32 big-endian length, bytes). Each thread builds
-- BODIES bodies in init, with stream ids drawn at random from STREAMS ids
-- of its own, and sends them in turn: about STREAMS streams per thread
-- receive the load. Every chunk ends with an HTTP Basic credential (a
-- match for the bundled rules) unless PLAIN=1 is in the environment.
--   wrk -t2 -c16 -d10s --latency -s benches/wrk/chunks.lua http://127.0.0.1:18100/v1/chunks
local FRAMES, CHUNK, STREAMS, BODIES = 64, 1460, 10000, 200

local function be32(n)
  return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
                     math.floor(n / 256) % 256, n % 256)
end

local requests, next_request = {}, 1

function init(args)
  math.randomseed(os.time() + math.random(1, 1000000))
  local ids = {}
  for i = 1, STREAMS do
    local b = {}
    for j = 1, 16 do b[j] = string.char(math.random(0, 255)) end
    ids[i] = table.concat(b)
  end
  local payload = string.rep("x", CHUNK - 32) .. "Authorization: Basic dXNlcjpw\r\n"
  if os.getenv("PLAIN") == "1" then payload = string.rep("x", CHUNK) end
  local header = be32(#payload)
  for r = 1, BODIES do
    local frames = {}
    for i = 1, FRAMES do
      frames[i] = ids[math.random(1, STREAMS)] .. header .. payload
    end
    requests[r] = wrk.format("POST", nil,
      { ["Content-Type"] = "application/octet-stream" }, table.concat(frames))
  end
end

function request()
  local req = requests[next_request]
  next_request = next_request % BODIES + 1
  return req
end
