-- The ext-plugin client side for nginx + lua-nginx-module (the OpenResty core APISIX runs on), written for
-- llm-router's benchmark and tests: what APISIX's ext-plugin-pre-req does for one routed call, from the protocol
-- facts in the project's notes. Per call: take a kept-alive Unix-socket connection (pool of 32, idle 180 s), get the
-- route's conf token (cached per worker; a missing one is fetched with PrepareConf on a second connection while the
-- first is held), send HTTPReqCall, answer ExtraInfo requests (ReqBody, Var) in a loop, then apply Stop or Rewrite
-- (path, headers, args, body, resp_headers). "conf token not found" flushes the cache and retries up to 3 times;
-- any other failure answers 503 (allow_degradation false). Then the routing header picks the upstream, as
-- traffic-split's vars match would. Flatbuffers are written and read by hand with LuaJIT's FFI.
local ffi = require "ffi"
local bit = require "bit"

local band, rshift = bit.band, bit.rshift
local u16p, u32p, i32p, u8p = ffi.typeof("uint16_t*"), ffi.typeof("uint32_t*"), ffi.typeof("int32_t*"),
    ffi.typeof("const uint8_t*")

local RPC_ERROR, RPC_PREPARE_CONF, RPC_HTTP_REQ_CALL, RPC_EXTRA_INFO = 0, 1, 2, 3
local CONF_TOKEN_NOT_FOUND = 2
local METHODS = {GET = 0, HEAD = 1, POST = 2, PUT = 3, DELETE = 4, MKCOL = 5, COPY = 6, MOVE = 7, OPTIONS = 8,
                 PROPFIND = 9, PROPPATCH = 10, LOCK = 11, UNLOCK = 12, PATCH = 13, TRACE = 14}
local EXCLUDED_RESP = {["content-type"] = true, ["content-location"] = true, ["content-language"] = true}
local TOKEN_TTL = 3600

local _M = {route_header = "x-llm-router-upstream", upstreams = {}}
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
        {"u32", ngx.worker.id() * 4194304 + counter},
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

-- One HTTPReqCall exchange; returns the reply's body buffer, or nil, error, and whether the token was unknown.
local function communicate(path, conf_json, key)
    local sock, err = connect(path)
    if not sock then return nil, err end
    local token
    token, err = conf_token(path, conf_json, key)
    if not token then return nil, err end
    local ok
    ok, err = sock:send(req_call_frame(token))
    if not ok then return nil, "send HTTPReqCall: " .. err end
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
        elseif ty == RPC_HTTP_REQ_CALL then
            sock:setkeepalive(180000, 32)
            return body
        else
            return nil, "unexpected type " .. ty
        end
    end
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
    local resp = entries(p, t, 3)
    if #resp > 0 then ngx.ctx.ext_resp_headers = resp end
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

-- The access phase: ngx.var.ext_socket and ngx.var.ext_conf name the runner and the route's plugin conf.
function _M.access()
    local path, conf_json = ngx.var.ext_socket, ngx.var.ext_conf
    local key = "route#" .. ngx.var.server_port .. "#ext-plugin-pre-req#1"
    local body, err, unknown
    for _ = 1, 3 do
        body, err, unknown = communicate(path, conf_json, key)
        if body or not unknown then break end
        tokens[key] = nil
    end
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

-- The header filter: the Rewrite's resp_headers, as APISIX sets them on the client's response.
function _M.header_filter()
    local resp = ngx.ctx.ext_resp_headers
    if not resp then return end
    for _, h in ipairs(resp) do
        if not EXCLUDED_RESP[h[1]:lower()] then ngx.header[h[1]] = h[2] end
    end
end

return _M
