-- The ext-plugin client side for nginx + lua-nginx-module (the OpenResty core APISIX runs on), written for
-- llm-router's benchmark and tests: what APISIX's ext-plugin-pre-req and ext-plugin-post-resp do, from the protocol
-- facts in the project's notes. Per call: take a kept-alive Unix-socket connection (pool of 32, idle 180 s), get the
-- plugin's conf token (cached per worker; a missing one is fetched with PrepareConf on a second connection while the
-- first is held), send the call, answer ExtraInfo requests (ReqBody, Var, RespBody) in a loop. "conf token not
-- found" flushes the cache and retries up to 3 times. pre-req (access phase): apply Stop or Rewrite (path, headers,
-- args, body, resp_headers), any other failure answers 503 (allow_degradation false), then the routing header picks
-- the upstream, as traffic-split's vars match would. post-resp (content phase): call that upstream, send
-- HTTPRespCall with its status and headers, answer with the runner's body or stream the upstream's through.
-- Flatbuffers are written and read by hand with LuaJIT's FFI.
local ffi = require "ffi"
local bit = require "bit"

local band, rshift = bit.band, bit.rshift
local u16p, u32p, i32p, u8p = ffi.typeof("uint16_t*"), ffi.typeof("uint32_t*"), ffi.typeof("int32_t*"),
    ffi.typeof("const uint8_t*")

local RPC_ERROR, RPC_PREPARE_CONF, RPC_HTTP_REQ_CALL, RPC_EXTRA_INFO, RPC_HTTP_RESP_CALL = 0, 1, 2, 3, 4
local CONF_TOKEN_NOT_FOUND = 2
local METHODS = {GET = 0, HEAD = 1, POST = 2, PUT = 3, DELETE = 4, MKCOL = 5, COPY = 6, MOVE = 7, OPTIONS = 8,
                 PROPFIND = 9, PROPPATCH = 10, LOCK = 11, UNLOCK = 12, PATCH = 13, TRACE = 14}
local HOP_BY_HOP = {connection = true, ["keep-alive"] = true, ["proxy-connection"] = true, te = true, trailer = true,
                    ["transfer-encoding"] = true, upgrade = true}
local EXCLUDED_RESP = {["content-type"] = true, ["content-location"] = true, ["content-language"] = true}
local TOKEN_TTL = 3600

local _M = {route_header = "x-llm-router-upstream", upstreams = {}, addrs = {}}
local tokens = {}   -- conf key -> {token, expires}: the worker's lrucache
local counter = 0

-- ---- writing: a forward flatbuffers layout (vtable, table, then its children at higher offsets) ----

local function new_buf(cap)
    return {b = ffi.new("uint8_t[?]", cap), cap = cap, pos = 0}
end

local function ensure(B, n)
    if B.pos + n > B.cap then
        local cap = math.max(B.cap * 2, B.pos + n + 64)
        local nb = ffi.new("uint8_t[?]", cap)
        ffi.copy(nb, B.b, B.pos)
        B.b, B.cap = nb, cap
    end
end

local function align4(B)
    local r = B.pos % 4
    if r ~= 0 then
        ensure(B, 4 - r)
        ffi.fill(B.b + B.pos, 4 - r)
        B.pos = B.pos + 4 - r
    end
end

local function put_u32(B, at, v)
    ffi.cast(u32p, B.b + at)[0] = v
end

local write_table

-- A child object of kind "str", "bytes" (a [ubyte] vector), "entries" ([TextEntry]) or "table" ({fields, slots}).
local function write_child(B, kind, v)
    align4(B)
    local at = B.pos
    if kind == "str" or kind == "bytes" then
        local n = #v
        ensure(B, n + 5)
        put_u32(B, at, n)
        ffi.copy(B.b + at + 4, v, n)
        B.b[at + 4 + n] = 0
        B.pos = at + n + 5
    elseif kind == "entries" then
        local n = #v
        ensure(B, 4 + 4 * n)
        put_u32(B, at, n)
        B.pos = at + 4 + 4 * n
        for i = 1, n do
            local e = v[i]
            local t = write_table(B, {{"str", e[1]}, e[2] ~= nil and {"str", e[2]} or false}, 2)
            put_u32(B, at + 4 * i, t - (at + 4 * i))
        end
    else
        return write_table(B, v[1], v[2])
    end
    return at
end

-- fields[i] describes slot i - 1: {"u32", n} for any scalar (each field gets a 4-byte little-endian slot, so a
-- reader of a ubyte or ushort finds its value in the low bytes), a child {kind, value}, or false when absent.
write_table = function(B, fields, nslots)
    align4(B)
    local vt = B.pos
    local vtsize = 4 + 2 * nslots
    local t = vt + vtsize + (vtsize % 4)
    local present = 0
    for i = 1, nslots do
        if fields[i] then present = present + 1 end
    end
    local tsize = 4 + 4 * present
    ensure(B, t - vt + tsize)
    ffi.fill(B.b + vt, t - vt + tsize)
    local vt16 = ffi.cast(u16p, B.b + vt)
    vt16[0], vt16[1] = vtsize, tsize
    ffi.cast(i32p, B.b + t)[0] = t - vt
    B.pos = t + tsize
    local k, refs = 0, nil
    for i = 1, nslots do
        local f = fields[i]
        if f then
            local at = t + 4 + 4 * k
            vt16[2 + i - 1] = 4 + 4 * k
            k = k + 1
            if f[1] == "u32" then
                put_u32(B, at, f[2])
            else
                refs = refs or {}
                refs[#refs + 1] = {at, f}
            end
        end
    end
    if refs then
        for _, r in ipairs(refs) do
            local c = write_child(B, r[2][1], r[2][2])
            put_u32(B, r[1], c - r[1])
        end
    end
    return t
end

-- One frame: type, 24-bit big-endian length, then a finished buffer whose root is the table `fields`.
local function frame(rpc_type, fields, nslots, cap)
    local B = new_buf(cap or 256)
    B.pos = 4
    local root = write_table(B, fields, nslots)
    put_u32(B, 0, root)
    local n = B.pos
    return string.char(rpc_type, band(rshift(n, 16), 255), band(rshift(n, 8), 255), band(n, 255))
        .. ffi.string(B.b, n)
end

-- ---- reading ----

local function rd_u32(p, at)
    return ffi.cast(u32p, p + at)[0]
end

local function field(p, t, slot)
    local vt = t - ffi.cast(i32p, p + t)[0]
    local vt16 = ffi.cast(u16p, p + vt)
    if 4 + 2 * slot >= vt16[0] then return nil end
    local off = vt16[2 + slot]
    if off == 0 then return nil end
    return t + off
end

local function scalar(p, t, slot, size)
    local at = field(p, t, slot)
    if not at then return 0 end
    if size == 1 then return p[at] end
    if size == 2 then return ffi.cast(u16p, p + at)[0] end
    return rd_u32(p, at)
end

local function bytes(p, t, slot)
    local at = field(p, t, slot)
    if not at then return nil end
    local v = at + rd_u32(p, at)
    return ffi.string(p + v + 4, rd_u32(p, v))
end

local function entries(p, t, slot)
    local at = field(p, t, slot)
    local out = {}
    if not at then return out end
    local v = at + rd_u32(p, at)
    for i = 0, rd_u32(p, v) - 1 do
        local e = v + 4 + 4 * i
        local et = e + rd_u32(p, e)
        out[#out + 1] = {bytes(p, et, 0) or "", bytes(p, et, 1)}
    end
    return out
end

local function root_table(p)
    return rd_u32(p, 0)
end

-- ---- the socket ----

local function recv_frame(sock)
    local head, err = sock:receive(4)
    if not head then return nil, "read header: " .. err end
    local a, b, c, d = head:byte(1, 4)
    local n = b * 65536 + c * 256 + d
    local body = ""
    if n > 0 then
        body, err = sock:receive(n)
        if not body then return nil, "read body: " .. err end
    end
    return a, body
end

local function connect(path)
    local sock = ngx.socket.tcp()
    sock:settimeouts(1000, 60000, 60000)
    local ok, err = sock:connect("unix:" .. path)
    if not ok then return nil, "connect " .. path .. ": " .. err end
    return sock
end

local function prepare_conf(path, conf_json, key)
    local sock, err = connect(path)
    if not sock then return nil, err end
    local ok
    ok, err = sock:send(frame(RPC_PREPARE_CONF,
        {{"entries", {{"llm-router", conf_json}}}, {"str", key}}, 2, 256 + #conf_json))
    if not ok then return nil, "send PrepareConf: " .. err end
    local ty, body = recv_frame(sock)
    if not ty then return nil, body end
    if ty ~= RPC_PREPARE_CONF then return nil, "PrepareConf answered with type " .. ty end
    sock:setkeepalive(180000, 32)
    local p = ffi.cast(u8p, body)
    return scalar(p, root_table(p), 0, 4)
end

local function conf_token(path, conf_json, key)
    local hit = tokens[key]
    if hit and hit[2] > ngx.now() then return hit[1] end
    local token, err = prepare_conf(path, conf_json, key)
    if not token then return nil, err end
    tokens[key] = {token, ngx.now() + TOKEN_TTL}
    return token
end

local function req_call_frame(token)
    counter = band(counter + 1, 0x3fffff)
    local args = {}
    for name, v in pairs(ngx.req.get_uri_args()) do
        if type(v) == "table" then
            for _, one in ipairs(v) do args[#args + 1] = {name, one ~= true and one or nil} end
        else
            args[#args + 1] = {name, v ~= true and v or nil}
        end
    end
    local headers, size = {}, 0
    for name, v in pairs(ngx.req.get_headers(100)) do
        if type(v) == "table" then
            for _, one in ipairs(v) do
                headers[#headers + 1] = {name, one}
                size = size + #name + #one
            end
        else
            headers[#headers + 1] = {name, v}
            size = size + #name + #v
        end
    end
    local path = ngx.var.uri
    return frame(RPC_HTTP_REQ_CALL, {
        {"u32", (ngx.worker.id() or 0) * 4194304 + counter},
        {"bytes", ngx.var.binary_remote_addr},
        {"u32", METHODS[ngx.req.get_method()] or 0},
        {"str", path},
        #args > 0 and {"entries", args} or false,
        {"entries", headers},
        {"u32", token},
    }, 7, 512 + size + #path + 24 * #headers)
end

local function read_body()
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if body then return body end
    local file = ngx.req.get_body_file()
    if not file then return nil end
    local f = io.open(file, "rb")
    if not f then return nil end
    body = f:read("*a")
    f:close()
    return body
end

-- One exchange of `rpc_type` (2 HTTPReqCall, 4 HTTPRespCall): ExtraInfo requests are answered in a loop (ReqBody,
-- Var, RespBody through `resp_body`); returns the reply's payload, or nil, an error and whether the token was unknown.
local function communicate(path, conf_json, key, rpc_type, make_frame, resp_body)
    local sock, err = connect(path)
    if not sock then return nil, err end
    local token
    token, err = conf_token(path, conf_json, key)
    if not token then return nil, err end
    local ok
    ok, err = sock:send(make_frame(token))
    if not ok then return nil, "send call: " .. err end
    while true do
        local ty, body = recv_frame(sock)
        if not ty then return nil, body end
        if ty == RPC_EXTRA_INFO then
            local p = ffi.cast(u8p, body)
            local t = root_table(p)
            local kind = scalar(p, t, 0, 1)
            local result
            if kind == 2 then
                result = read_body()
            elseif kind == 1 then
                local at = field(p, t, 1)
                local var = at and bytes(p, at + rd_u32(p, at), 0)
                result = var and ngx.var[var]
                result = result ~= nil and tostring(result) or nil
            elseif kind == 3 and resp_body then
                result = resp_body()
            end
            ok, err = sock:send(frame(RPC_EXTRA_INFO, {result and {"bytes", result} or false}, 1,
                128 + (result and #result or 0)))
            if not ok then return nil, "send ExtraInfo: " .. err end
        elseif ty == RPC_ERROR then
            local p = ffi.cast(u8p, body)
            local code = scalar(p, root_table(p), 0, 1)
            sock:setkeepalive(180000, 32)
            return nil, code == CONF_TOKEN_NOT_FOUND and "conf token not found" or "runner error " .. code,
                code == CONF_TOKEN_NOT_FOUND
        elseif ty == rpc_type then
            sock:setkeepalive(180000, 32)
            return body
        else
            return nil, "unexpected type " .. ty
        end
    end
end

-- communicate, retried up to 3 times (each with a new PrepareConf) while the runner does not know the token.
local function rpc(plugin, rpc_type, make_frame, resp_body)
    local path, conf_json = ngx.var.ext_socket, ngx.var.ext_conf
    local key = "route#" .. ngx.var.server_port .. "#" .. plugin .. "#1"
    local body, err, unknown
    for _ = 1, 3 do
        body, err, unknown = communicate(path, conf_json, key, rpc_type, make_frame, resp_body)
        if body or not unknown then break end
        tokens[key] = nil
    end
    return body, err
end

local function apply_rewrite(p, t)
    local path = bytes(p, t, 0)
    if path and path ~= "" then
        local args = ngx.var.args
        ngx.var.upstream_uri = ngx.escape_uri(path, 0) .. (args and args ~= "" and "?" .. args or "")
    end
    for _, h in ipairs(entries(p, t, 1)) do
        if h[2] == nil then
            ngx.req.clear_header(h[1])
        else
            ngx.req.set_header(h[1], h[2])
            if h[1]:lower() == "host" then ngx.var.upstream_host = h[2] end
        end
    end
    local args = entries(p, t, 2)
    if #args > 0 then
        local current = ngx.req.get_uri_args()
        for _, a in ipairs(args) do
            current[a[1]] = a[2]
        end
        ngx.req.set_uri_args(current)
    end
    -- resp_headers go onto the response at once (APISIX: core.response.set_header), so a later post-resp reply
    -- naming the same header wins
    for _, h in ipairs(entries(p, t, 3)) do
        if not EXCLUDED_RESP[h[1]:lower()] then ngx.header[h[1]] = h[2] end
    end
    local body = bytes(p, t, 4)
    if body and body ~= "" then ngx.req.set_body_data(body) end
end

local function apply_stop(p, t)
    local status = scalar(p, t, 0, 2)
    ngx.status = status == 0 and 200 or status
    for _, h in ipairs(entries(p, t, 1)) do
        ngx.header[h[1]] = h[2]
    end
    local body = bytes(p, t, 2)
    if body then ngx.print(body) end
    return ngx.exit(ngx.status)
end

-- The access phase (ext-plugin-pre-req): ngx.var.ext_socket and ngx.var.ext_conf name the runner and the route's conf.
function _M.access()
    local body, err = rpc("ext-plugin-pre-req", RPC_HTTP_REQ_CALL, req_call_frame)
    if not body then
        ngx.log(ngx.ERR, "ext-plugin-pre-req: ", err)
        return ngx.exit(503)
    end
    local p = ffi.cast(u8p, body)
    local t = root_table(p)
    local action = scalar(p, t, 1, 1)
    local at = field(p, t, 2)
    if action ~= 0 and at then
        local a = at + rd_u32(p, at)
        if action == 1 then return apply_stop(p, a) end
        if action == 2 then apply_rewrite(p, a) end
    end
    local up = _M.upstreams[ngx.req.get_headers()[_M.route_header] or ""]
    if up then ngx.var.llm_upstream = up end
end

-- ---- ext-plugin-post-resp: the plugin calls the upstream itself, asks the runner, then answers ----

local function upstream_call(addr, body)
    local sock = ngx.socket.tcp()
    sock:settimeouts(10000, 60000, 600000)
    local ok, err = sock:connect(addr[1], addr[2])
    if not ok then return nil, "connect upstream: " .. err end
    local out = {ngx.req.get_method(), " ", ngx.var.upstream_uri, " HTTP/1.1\r\nhost: ", ngx.var.upstream_host, "\r\n"}
    for name, v in pairs(ngx.req.get_headers(100)) do
        if not HOP_BY_HOP[name] and name ~= "host" and name ~= "content-length" then
            for _, one in ipairs(type(v) == "table" and v or {v}) do
                out[#out + 1] = name .. ": " .. one .. "\r\n"
            end
        end
    end
    out[#out + 1] = "content-length: " .. (body and #body or 0) .. "\r\n\r\n"
    out[#out + 1] = body or ""
    ok, err = sock:send(out)
    if not ok then return nil, "send upstream: " .. err end
    local line
    line, err = sock:receive("*l")
    local status = line and tonumber(line:match("^HTTP/%d%.%d (%d%d%d)"))
    if not status then return nil, "upstream status line: " .. (err or line) end
    local headers = {}
    while true do
        line, err = sock:receive("*l")
        if not line then return nil, "upstream headers: " .. err end
        if line == "" then break end
        local name, value = line:match("^([^:]+):%s*(.-)%s*$")
        if name then headers[#headers + 1] = {name:lower(), value} end
    end
    return sock, status, headers
end

-- An iterator over the upstream body's pieces (chunked, sized or until close), and whether the connection is reusable.
local function body_reader(sock, status, headers)
    local te, length
    for _, h in ipairs(headers) do
        if h[1] == "transfer-encoding" then te = h[2]:lower() elseif h[1] == "content-length" then length = tonumber(h[2]) end
    end
    if ngx.req.get_method() == "HEAD" or status == 204 or status == 304 then
        return function() return nil end, true
    end
    if te and te:find("chunked", 1, true) then
        local done = false
        return function()
            if done then return nil end
            local line, err = sock:receive("*l")
            if not line then return nil, err end
            local size = tonumber(line:match("^%x+") or "", 16)
            if not size then return nil, "bad chunk size" end
            if size == 0 then
                repeat line = sock:receive("*l") until not line or line == ""
                done = true
                return nil
            end
            local data
            data, err = sock:receive(size)
            if not data then return nil, err end
            sock:receive(2)
            return data
        end, true
    end
    if length then
        local left = length
        return function()
            if left <= 0 then return nil end
            local data, err = sock:receive(math.min(left, 65536))
            if not data then return nil, err end
            left = left - #data
            return data
        end, true
    end
    return function()
        local data, err, partial = sock:receive(8192)
        if data then return data end
        if err == "closed" and partial and #partial > 0 then return partial end
        return nil
    end, false
end

local function resp_call_frame(status, headers)
    local size = 0
    for _, h in ipairs(headers) do size = size + #h[1] + #h[2] end
    counter = band(counter + 1, 0x3fffff)
    local id = (ngx.worker.id() or 0) * 4194304 + counter
    return function(token)
        return frame(RPC_HTTP_RESP_CALL, {{"u32", id}, {"u32", status}, {"entries", headers}, {"u32", token}}, 4,
            512 + size + 24 * #headers)
    end
end

local function send_headers(status, headers)
    ngx.status = status
    for _, h in ipairs(headers) do
        local name = h[1]:lower()
        if not HOP_BY_HOP[name] and name ~= "content-length" then ngx.header[h[1]] = h[2] end
    end
end

-- The content phase: the upstream picked by the routing header, then HTTPRespCall with its status and headers.
-- The runner's body replaces the answer; without one the upstream body streams through piece by piece (buffered
-- only when the runner asked for it with RespBody). A runner that cannot be asked lets the answer through
-- (allow_degradation true, as `llm-router apisix enable --post-resp` sets it).
function _M.post_resp()
    local body = read_body()
    local addr = _M.addrs[ngx.var.llm_upstream]
    if not addr then return ngx.exit(502) end
    local sock, status, headers = upstream_call(addr, body)
    if not sock then
        ngx.log(ngx.ERR, "ext-plugin-post-resp: ", status)
        return ngx.exit(502)
    end
    local reader, reusable = body_reader(sock, status, headers)
    local buffered
    local function resp_body()
        local parts = {}
        while true do
            local piece = reader()
            if not piece then break end
            parts[#parts + 1] = piece
        end
        buffered = table.concat(parts)
        return buffered
    end
    local reply, err = rpc("ext-plugin-post-resp", RPC_HTTP_RESP_CALL, resp_call_frame(status, headers), resp_body)
    local r_status, r_headers, r_body = 0, {}, nil
    if reply then
        local p = ffi.cast(u8p, reply)
        local t = root_table(p)
        r_status, r_headers, r_body = scalar(p, t, 1, 2), entries(p, t, 2), bytes(p, t, 3)
    else
        ngx.log(ngx.ERR, "ext-plugin-post-resp: ", err)
    end
    send_headers(r_status ~= 0 and r_status or status, #r_headers > 0 and r_headers or headers)
    if r_body and r_body ~= "" then
        ngx.header["content-length"] = #r_body
        ngx.print(r_body)
        sock:close()
        return
    end
    if buffered then
        ngx.print(buffered)
    else
        while true do
            local piece = reader()
            if not piece then break end
            ngx.print(piece)
            ngx.flush(true)
        end
    end
    if reusable then sock:setkeepalive(60000, 64) else sock:close() end
end

-- ---- http-logger with include_resp_body, for streams: a copy of the body as it goes by, posted once it is over ----

local ESCAPES = {['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t"}

local function json_string(s)
    return '"' .. s:gsub('[%c"\\]', function(c)
        return ESCAPES[c] or string.format("\\u%04x", c:byte())
    end) .. '"'
end

-- The body filter: keep a copy of a stream's pieces (they go on to the client untouched).
function _M.body_copy()
    local ctype = ngx.header["content-type"]
    if not ctype or not ctype:find("event-stream", 1, true) then return end
    local chunk = ngx.arg[1]
    if chunk and chunk ~= "" then
        local parts = ngx.ctx.body_parts or {}
        parts[#parts + 1] = chunk
        ngx.ctx.body_parts = parts
    end
end

local function post_log(premature, port, auth, entry)
    if premature then return end
    local sock = ngx.socket.tcp()
    sock:settimeouts(1000, 5000, 5000)
    local ok, err = sock:connect("127.0.0.1", port)
    if not ok then
        ngx.log(ngx.ERR, "usage log: ", err)
        return
    end
    sock:send({"POST /v1/usage-log HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n",
               auth ~= "" and "authorization: " .. auth .. "\r\n" or "",
               "connection: close\r\ncontent-length: ", #entry, "\r\n\r\n", entry})
    sock:receive("*l")
    sock:close()
end

-- The log phase: the exchange's entry (the request's headers, the response's status and body) posted from a timer,
-- as http-logger does from its batch processor (with its auth_header, from $usage_log_auth).
function _M.usage_log()
    local parts = ngx.ctx.body_parts
    if not parts then return end
    local headers = {}
    for name, v in pairs(ngx.req.get_headers(100)) do
        headers[#headers + 1] = json_string(name) .. ":" .. json_string(type(v) == "table" and v[1] or v)
    end
    local entry = '{"request":{"headers":{' .. table.concat(headers, ",") .. '}},"response":{"status":' .. ngx.status
        .. ',"body":' .. json_string(table.concat(parts)) .. '}}'
    ngx.timer.at(0, post_log, tonumber(ngx.var.usage_log_port), ngx.var.usage_log_auth or "", entry)
end

return _M
