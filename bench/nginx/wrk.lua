-- bench/nginx: wrk script cycling through the reference request mix.
-- Usage: wrk ... -s wrk.lua URL -- REQUESTS.lua
-- REQUESTS.lua (written by requests.py lua) returns a table of raw HTTP/1.1
-- requests; each connection's next request is the next string, so the mix
-- reaches the proxy in the file's proportions. Threads start at different
-- offsets. Nothing is parsed or formatted per request.

local n_threads = 0

function setup(thread)
  thread:set("offset", n_threads)
  n_threads = n_threads + 1
end

local reqs, n, i

function init(args)
  local path = args[1]
  if not path then
    error("wrk.lua: pass the requests file after --")
  end
  reqs = dofile(path)
  n = #reqs
  i = ((offset or 0) * 997) % n
end

function request()
  i = i + 1
  if i > n then
    i = 1
  end
  return reqs[i]
end
