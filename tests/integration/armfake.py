"""A scripted stand-in for Azure Resource Manager and the Entra ID token endpoint, on loopback
(standard library only). It speaks the documented wire protocol: 201/202 with
Azure-AsyncOperation or Location, operation polling to Succeeded/Failed, 429 with
Retry-After, ARM error bodies; a storage account's listKeys answers a fixed key
(storage_key). Every request is recorded for the tests to check."""

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


# The storage account key listKeys answers with (tests look for it where it must not be).
TEST_STORAGE_KEY = base64.b64encode(b"armfake storage account key, never to be shown".ljust(64,
                                                                                       b".")).decode()


class ArmFake:
    def __init__(self):
        self.requests = []  # (method, path, body or None)
        self.groups = {}  # name -> {"location", "tags"}
        self.resources = {}  # path -> body
        self.ops = {}  # op id -> [statuses still to answer], error
        self.throttle = set()  # path substrings answered 429 once
        self.fail = {}  # path substring -> (code, message): its operation fails once
        self.bad = {}  # path substring -> (code, message): 400 at once
        self.capacity = 0
        self.storage_key = TEST_STORAGE_KEY  # key1 of every storage account
        self.lock = threading.Lock()
        self.next_op = 0
        fake = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status, body=None, headers=None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                with fake.lock:
                    status, body, headers = fake.answer(self.command, self.path, raw,
                                                        self.headers)
                self._send(status, body, headers)

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def writes(self):
        return [(m, p) for m, p, _ in self.requests if m in ("PUT", "PATCH", "POST", "DELETE")
                and "/oauth2/" not in p]

    def _op(self, statuses, error=None):
        self.next_op += 1
        self.ops[str(self.next_op)] = (list(statuses), error)
        return f"{self.url}/ops/{self.next_op}"

    def answer(self, method, path, raw, headers):
        body = json.loads(raw) if raw and "/oauth2/" not in path else None
        self.requests.append((method, path, body if body is not None else raw.decode()))
        base = path.split("?")[0]
        if "/oauth2/v2.0/token" in path:
            form = raw.decode()
            if "client_secret=right" not in form and "client_assertion=" not in form:
                return 401, {"error": "invalid_client",
                             "error_description": "AADSTS7000215: Invalid client secret."}, {}
            return 200, {"token_type": "Bearer", "expires_in": 3599, "access_token": "tok"}, {}
        if headers.get("Authorization") != "Bearer tok":
            return 401, {"error": {"code": "InvalidAuthenticationToken",
                                   "message": "no token"}}, {}
        if base.startswith("/ops/"):
            statuses, error = self.ops[base[5:]]
            st = statuses.pop(0) if len(statuses) > 1 else statuses[0]
            if st == "202":
                return 202, None, {"Retry-After": "0"}
            if st == "200":
                return 200, None, {}
            out = {"status": st}
            if st == "Failed":
                out["error"] = {"code": error[0], "message": error[1]}
            return 200, out, {"Retry-After": "0"}
        for sub in list(self.throttle):
            if sub in base:
                self.throttle.discard(sub)
                return 429, {"error": {"code": "TooManyRequests", "message": "slow down"}}, \
                    {"Retry-After": "0"}
        for sub, (code, msg) in self.bad.items():
            if sub in base:
                return 400, {"error": {"code": code, "message": msg}}, {}
        m = re.match(r"^/subscriptions/[^/]+/resourcegroups/([^/]+)$", base)
        if m:
            name = m.group(1)
            if method == "GET":
                g = self.groups.get(name)
                return (200, {"name": name, **g}, {}) if g else \
                    (404, {"error": {"code": "ResourceGroupNotFound",
                                     "message": f"Resource group '{name}' could not be found."}},
                     {})
            if method == "PUT":
                self.groups[name] = {"location": body["location"], "tags": body.get("tags", {})}
                return 201, {"name": name, **self.groups[name]}, {}
            if method == "DELETE":
                self.groups.pop(name, None)
                return 202, None, {"Location": self._op(["202", "200"]), "Retry-After": "0"}
        if base.endswith("/resources"):
            return 200, {"value": []}, {}
        if method == "POST" and base.endswith("/listKeys"):
            # synchronous, as the storage provider answers it; only for an account made here
            account = base[:-len("/listKeys")]
            if "/Microsoft.Storage/storageAccounts/" not in base or account not in self.resources:
                return 404, {"error": {"code": "ResourceNotFound",
                                       "message": "storage account not found"}}, {}
            return 200, {"keys": [
                {"keyName": "key1", "value": self.storage_key, "permissions": "FULL"},
                {"keyName": "key2", "value": base64.b64encode(b"k2" * 32).decode(),
                 "permissions": "FULL"}]}, {}
        if base.endswith("/runCommand"):
            return 202, None, {"Location": self._op(["202", "200"]), "Retry-After": "0"}
        if method in ("PUT", "PATCH"):
            if "virtualMachineScaleSets" in base:
                cap = (body.get("sku") or {}).get("capacity")
                if cap:
                    self.capacity = cap
            error = None
            for sub, e in list(self.fail.items()):
                if sub in base:
                    error = e
                    del self.fail[sub]
            self.resources[base] = body
            return 201, {"properties": {"provisioningState": "Creating"}}, \
                {"Azure-AsyncOperation": self._op(["InProgress", "Failed" if error else
                                                   "Succeeded"], error), "Retry-After": "0"}
        if method == "POST":
            return 202, None, {"Azure-AsyncOperation": self._op(["InProgress", "Succeeded"]),
                               "Retry-After": "0"}
        if method == "DELETE":
            existed = self.resources.pop(base, None) is not None
            if not existed:
                return 204, None, {}
            return 202, None, {"Location": self._op(["202", "200"]), "Retry-After": "0"}
        if method == "GET":
            if base.endswith("/virtualMachines"):
                return 200, {"value": [{"instanceId": str(i), "properties": {"instanceView": {
                    "statuses": [{"code": "ProvisioningState/succeeded"},
                                 {"code": "PowerState/running"}]}}}
                    for i in range(self.capacity)]}, {}
            if "loadBalancers" in base:
                vmss = base.split("/providers/")[0] + \
                    "/providers/Microsoft.Compute/virtualMachineScaleSets/x"
                return 200, {"properties": {"provisioningState": "Succeeded", "inboundNatRules": [
                    {"name": f"tunnels.{i}", "properties": {
                        "frontendPort": 10124 + i, "backendPort": 10124,
                        "backendIPConfiguration": {
                            "id": f"{vmss}/virtualMachines/{i}/networkInterfaces/nic/"
                                  "ipConfigurations/ipcfg"}}}
                    for i in range(self.capacity)]}}, {}
            if base in self.resources:
                return 200, {"sku": {"capacity": self.capacity},
                             "properties": {"provisioningState": "Succeeded"}}, {}
            return 404, {"error": {"code": "ResourceNotFound", "message": "not found"}}, {}
        return 400, {"error": {"code": "BadRequest", "message": f"{method} {base}"}}, {}
