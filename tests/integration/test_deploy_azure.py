"""cmgctl create/scale/status/delete --provider azure against the scripted ARM endpoint
(armfake): request order and bodies, long-running operations, 429, a failure mid-way then a
re-run that converges, a region mismatch that stops before any write, and settings refused
before any call. The storage account's key: listed after the account is made, handed to the
instances only in protected settings, never shown or kept; status and cmgctl content read the
deployment's storage (Azurite) with it."""

import base64
import json
import os
import unittest

import azurite
import cmgtest as ct
from armfake import ArmFake, TEST_STORAGE_KEY

SUB = "11111111-2222-3333-4444-555555555555"
APP = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
TENANT = "99999999-8888-7777-6666-555555555555"


class AzureDeploy(unittest.TestCase):
    def setUp(self):
        self.arm = ArmFake().start()
        self.dir = ct.mkdtemp("az-")
        self.state = os.path.join(self.dir, "state")
        p = ct.pki()
        self.settings = os.path.join(self.dir, "cmg.ini")
        with open(self.settings, "w") as f:
            f.write(ct.ini_text({
                "deployment": {"provider": "azure", "state": self.state},
                "azure": {"tenant_id": TENANT, "subscription_id": SUB,
                          "server_app_client_id": APP, "server_app_secret": "right",
                          "region": "eastus", "group_name": "cmg-rg",
                          "arm_endpoint": self.arm.url, "login_endpoint": self.arm.url,
                          # status reads the storage: on loopback, where nothing answers
                          "blob_endpoint": f"http://127.0.0.1:{ct.free_port()}/cmg",
                          "admin_ssh_public_key": "ssh-ed25519 AAAAtest",
                          "gateway_package_url": "https://example.test/cmg-gateway.tar.gz",
                          "poll_interval": "10ms"},
                "service": {"service_cert_path": os.path.join(p, "server.pfx"),
                            "service_cert_password": ct.PFX_PASSWORD,
                            "ca_root_cert": os.path.join(p, "root-ca.crt")},
            }))

    def tearDown(self):
        self.arm.stop()

    def cmgctl(self, *args):
        return ct.run([ct.CMGCTL, *args, "--settings", self.settings], timeout=60)

    def vmss_put(self):
        """The body of the (last) scale set PUT."""
        bodies = [b for m, p, b in self.arm.requests
                  if m == "PUT" and "/virtualMachineScaleSets/" in p]
        self.assertTrue(bodies, "no scale set was put")
        return bodies[-1]

    def assert_key_nowhere(self, key, *outputs):
        """key is in none of the outputs, the deploy log or the state folder's files."""
        for text in outputs:
            self.assertNotIn(key, text)
        for name in os.listdir(self.state):
            with open(os.path.join(self.state, name), "rb") as f:
                self.assertNotIn(key.encode(), f.read(), name)

    def test_storage_key_listed_and_given_only_in_protected_settings(self):
        r = self.cmgctl("create", "--vm-instance-count", "2", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        calls = [(m, p.split("?")[0]) for m, p, _ in self.arm.requests]
        account = f"/subscriptions/{SUB}/resourceGroups/cmg-rg/providers/Microsoft.Storage/" \
                  "storageAccounts/cmg"
        put_account = calls.index(("PUT", account))
        list_keys = calls.index(("POST", account + "/listKeys"))
        put_vmss = max(i for i, (m, p) in enumerate(calls)
                       if m == "PUT" and "/virtualMachineScaleSets/" in p)
        self.assertLess(put_account, list_keys, "listKeys after the account is made")
        self.assertLess(list_keys, put_vmss, "the key is known before the scale set is put")
        keys_url = [p for m, p, _ in self.arm.requests if p.split("?")[0].endswith("/listKeys")]
        self.assertEqual(keys_url, [account + "/listKeys?api-version=2023-05-01"])

        # the instances' settings: a blob store in the account, the key in protected settings
        vmss = self.vmss_put()
        ext = vmss["properties"]["virtualMachineProfile"]["extensionProfile"]["extensions"][0]
        script = base64.b64decode(ext["properties"]["protectedSettings"]["script"]).decode()
        ini = script.split("cat > /etc/cmg/gateway.ini <<'CMG_EOF'\n", 1)[1]
        content = ini.split("[content]\n", 1)[1].split("\n[", 1)[0]
        for line in ("store = blob", "account = cmg", "environment = AzurePublicCloud",
                     "container = content", "account_key_file = /etc/cmg/storage-key.txt"):
            self.assertIn(line + "\n", content, content)
        self.assertNotIn("folder =", content)
        self.assertNotIn(TEST_STORAGE_KEY, ini, "gateway.ini is world-readable")
        self.assertIn(f"cat > /etc/cmg/storage-key.txt <<'CMG_EOF'\n{TEST_STORAGE_KEY}\n",
                      script)
        keyfile = script.index("/etc/cmg/storage-key.txt <<")
        self.assertLess(script.rindex("umask 077", 0, keyfile),
                        keyfile, "the key file is written while umask 077 holds")
        self.assertGreater(script.index("umask 022"), keyfile)
        # nowhere else in the scale set: not in public settings, not in custom data
        public = json.loads(json.dumps(vmss))
        del public["properties"]["virtualMachineProfile"]["extensionProfile"]["extensions"][0][
            "properties"]["protectedSettings"]
        self.assertNotIn(TEST_STORAGE_KEY, json.dumps(public))
        self.assertNotIn("customData", json.dumps(public))
        # never shown, logged or kept (the state folder is not private: state.json is 0644)
        with open(os.path.join(self.state, "CloudMgr.log")) as f:
            log = f.read()
        self.assertIn("listKeys", log)
        self.assert_key_nowhere(TEST_STORAGE_KEY, r.stdout, r.stderr, log)

        # status lists the key again; still nothing shows it
        r = self.cmgctl("status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sum(1 for m, p, _ in self.arm.requests
                             if p.split("?")[0].endswith("/listKeys")), 2)
        self.assert_key_nowhere(TEST_STORAGE_KEY, r.stdout, r.stderr)

    def test_content_off_lists_no_key(self):
        r = self.cmgctl("create", "--enable-cloud-dp-function", "false")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(any(p.split("?")[0].endswith("/listKeys")
                             for _, p, _ in self.arm.requests))
        script = base64.b64decode(self.vmss_put()["properties"]["virtualMachineProfile"][
            "extensionProfile"]["extensions"][0]["properties"]["protectedSettings"]["script"])
        self.assertNotIn(b"store = blob", script)
        r = self.cmgctl("status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["alerts"]["storage"]["state"], "off")

    def test_status_says_why_when_the_key_cannot_be_listed(self):
        r = self.cmgctl("create")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.arm.bad["/listKeys"] = ("AuthorizationFailed", "no listKeys permission")
        r = self.cmgctl("status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        st = json.loads(r.stdout)
        self.assertEqual(st["state"], "Ready", "the instances are still reported")
        storage = st["alerts"]["storage"]
        self.assertEqual(storage["state"], "unknown")
        self.assertIn("AuthorizationFailed", storage["detail"])

    def test_create_order_bodies_and_delete(self):
        self.arm.throttle.add("/publicIPAddresses/")
        r = self.cmgctl("create", "--vm-instance-count", "3", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        kinds = [p.split("?")[0].rsplit("/", 2)[-2] for m, p in self.arm.writes()
                 if m == "PUT"]
        self.assertEqual(kinds, ["resourcegroups", "storageAccounts", "containers", "tables",
                                 "networkSecurityGroups", "virtualNetworks", "publicIPAddresses",
                                 "publicIPAddresses", "loadBalancers",
                                 "virtualMachineScaleSets"])
        puts = {p.split("?")[0].rsplit("/", 1)[-1]: b for m, p, b in self.arm.requests
                if m == "PUT"}
        vmss = puts["cmg-vmss"]
        self.assertEqual(vmss["sku"], {"name": "Standard_A2_v2", "tier": "Standard",
                                       "capacity": 3})
        self.assertFalse(vmss["properties"]["overprovision"])
        lb = puts["cmg-lb"]["properties"]
        self.assertEqual(lb["loadBalancingRules"][0]["properties"]["frontendPort"], 443)
        pool = lb["inboundNatPools"][0]["properties"]
        self.assertEqual((pool["frontendPortRangeStart"], pool["frontendPortRangeEnd"],
                          pool["backendPort"]), (10124, 10139, 10124))
        self.assertEqual(puts["cmg-pip"]["properties"]["dnsSettings"]["domainNameLabel"], "cmg")
        self.assertEqual(puts["cmg-nsg"]["properties"]["securityRules"][1]["properties"]
                         ["destinationPortRange"], "10124-10139")
        self.assertEqual(puts["cmg-rg"]["location"], "eastus")
        # every call carries an api-version; each instance got its id and the count
        self.assertTrue(all("api-version=" in p for m, p, _ in self.arm.requests
                            if "/ops/" not in p and "/oauth2/" not in p))
        runs = [b for m, p, b in self.arm.requests if p.split("?")[0].endswith("/runCommand")]
        self.assertEqual(len(runs), 3)
        self.assertIn("instance_id = 2/", " ".join(runs[2]["script"]))
        self.assertIn("instances = 3/", " ".join(runs[0]["script"]))
        out = json.loads(r.stdout)
        self.assertEqual(out["deployment_name"], "cmg.eastus.cloudapp.azure.com")
        log = open(os.path.join(self.state, "CloudMgr.log")).read()
        self.assertIn("CloudMgr", log)
        self.assertNotIn(ct.PFX_PASSWORD, log)

        r = self.cmgctl("scale", "5")
        self.assertEqual(r.returncode, 0, r.stderr)
        patch = [b for m, p, b in self.arm.requests if m == "PATCH"]
        self.assertEqual(patch, [{"sku": {"capacity": 5}}])
        r = self.cmgctl("status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        st = json.loads(r.stdout)
        self.assertEqual(st["state"], "Ready")
        self.assertEqual(len(st["instance_states"]), 5)

        before = len(self.arm.requests)
        r = self.cmgctl("delete")
        self.assertEqual(r.returncode, 0, r.stderr)
        deletes = [p.split("?")[0].rsplit("/", 1)[-1] for m, p, _ in
                   self.arm.requests[before:] if m == "DELETE"]
        self.assertEqual(deletes, ["cmg-vmss", "cmg-lb", "cmg-pip", "cmg-vnet", "cmg-nsg",
                                   "cmg", "cmg-rg"])
        self.assertNotIn("cmg-rg", self.arm.groups)
        r = self.cmgctl("status")
        self.assertEqual(r.returncode, 3, r.stderr)

    def test_failure_then_rerun_converges(self):
        self.arm.fail["/loadBalancers/"] = ("InternalServerError",
                                            "the load balancer could not be created")
        r = self.cmgctl("create")
        self.assertEqual(r.returncode, 1)
        self.assertIn("InternalServerError", r.stderr)
        self.assertIn("the load balancer could not be created", r.stderr)
        self.assertNotIn("/virtualMachineScaleSets/cmg-vmss?", "".join(
            p for m, p in self.arm.writes()))
        r = self.cmgctl("create")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("cmg-rg", self.arm.groups)
        self.assertEqual(self.arm.capacity, 1)
        state = json.load(open(os.path.join(self.state, "state.json")))
        self.assertTrue(state["complete"])
        self.assertTrue(state["rg_created"])

    def test_region_mismatch_stops_before_any_write(self):
        self.arm.groups["cmg-rg"] = {"location": "westeurope", "tags": {}}
        r = self.cmgctl("create", "--is-using-existing-group")
        self.assertEqual(r.returncode, 1)
        self.assertIn("westeurope", r.stderr)
        self.assertEqual(self.arm.writes(), [])

    def test_arm_error_shown_with_code_and_hint(self):
        self.arm.bad["/virtualMachineScaleSets/"] = (
            "SkuNotAvailable", "The requested VM size Standard_A2_v2 is not available")
        r = self.cmgctl("create")
        self.assertEqual(r.returncode, 1)
        self.assertIn("SkuNotAvailable", r.stderr)
        self.assertIn("what to do", r.stderr)

    def test_wrong_secret(self):
        r = self.cmgctl("create", "--server-app-secret", "wrong")
        self.assertEqual(r.returncode, 1)
        self.assertIn("invalid_client", r.stderr)
        self.assertEqual(self.arm.writes(), [])

    def test_bad_settings_refused_before_any_call(self):
        cases = [
            (["--vm-instance-count", "17"], "--vm-instance-count"),
            (["--vm-instance-count", "0"], "1..16"),
            (["--region", "East US"], "lowercase"),
            (["--group-name", "bad/name"], "group"),
            (["--subscription-id", "nope"], "GUID"),
            (["--service-name", "other.example.com"], "not a name of the certificate"),
            (["--vm-size", "Huge"], "--vm-size"),
            (["--traffic-warning-pct", "95"], "below the critical"),
        ]
        for args, want in cases:
            r = self.cmgctl("create", *args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(want, r.stderr, args)
        self.assertEqual(self.arm.requests, [])

    def test_dry_run_prints_requests_and_sends_none(self):
        r = self.cmgctl("create", "--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"PUT {self.arm.url}/subscriptions/{SUB}/resourcegroups/cmg-rg", r.stdout)
        self.assertIn("virtualMachineScaleSets/cmg-vmss?api-version=2024-11-01", r.stdout)
        self.assertIn("<redacted", r.stdout)
        self.assertNotIn(ct.PFX_PASSWORD, r.stdout)
        # the key request is shown, its answer is not
        keys = f"POST {self.arm.url}/subscriptions/{SUB}/resourceGroups/cmg-rg/providers/" \
               "Microsoft.Storage/storageAccounts/cmg/listKeys?api-version=2023-05-01"
        self.assertIn(keys, r.stdout)
        self.assertIn("<redacted: the storage account's keys>", r.stdout)
        self.assertLess(r.stdout.index("storageAccounts/cmg?"), r.stdout.index(keys))
        self.assertNotIn(TEST_STORAGE_KEY, r.stdout + r.stderr)
        self.assertEqual(self.arm.requests, [])


class AzureDeployStorage(unittest.TestCase):
    """The deployment's storage account is Azurite's emulator account: the service name's
    prefix makes it devstoreaccount1, listKeys answers its key, and the blob endpoint override
    points at Azurite's path-style URL."""

    @classmethod
    def setUpClass(cls):
        cls.az = azurite.Azurite(scale=ct.SCALE).start()
        cls.pki = os.path.join(ct.mkdtemp("az-pki-"), "pki")
        ct.run([ct.CMGCTL, "pki", "init", cls.pki, "--service-name",
                f"{azurite.ACCOUNT}.cmg.test"], timeout=60, check=True)

    @classmethod
    def tearDownClass(cls):
        cls.az.cleanup()

    def setUp(self):
        self.arm = ArmFake().start()
        self.arm.storage_key = azurite.KEY
        self.dir = ct.mkdtemp("az-storage-")
        self.state = os.path.join(self.dir, "state")
        self.settings = os.path.join(self.dir, "cmg.ini")
        with open(self.settings, "w") as f:
            f.write(ct.ini_text({
                "deployment": {"provider": "azure", "state": self.state},
                "azure": {"tenant_id": TENANT, "subscription_id": SUB,
                          "server_app_client_id": APP, "server_app_secret": "right",
                          "region": "eastus", "group_name": "cmg-rg",
                          "arm_endpoint": self.arm.url, "login_endpoint": self.arm.url,
                          "blob_endpoint": self.az.endpoint,
                          "admin_ssh_public_key": "ssh-ed25519 AAAAtest",
                          "gateway_package_url": "https://example.test/cmg-gateway.tar.gz",
                          "poll_interval": "10ms"},
                "service": {"service_cert_path": os.path.join(self.pki, "server.pfx"),
                            "service_cert_password": ct.PFX_PASSWORD},
                "alerts": {"enable_storage_quota": "true", "storage_quota_gb": "1",
                           "storage_warning_pct": "40", "storage_critical_pct": "80"},
            }))

    def tearDown(self):
        self.arm.stop()

    def cmgctl(self, *args):
        return ct.run([ct.CMGCTL, *args], timeout=60)

    def test_status_and_content_use_the_deployment_storage(self):
        r = self.cmgctl("create", "--settings", self.settings)
        self.assertEqual(r.returncode, 0, r.stderr)
        script = base64.b64decode(self.arm.resources[next(
            p for p in self.arm.resources if "/virtualMachineScaleSets/" in p)][
            "properties"]["virtualMachineProfile"]["extensionProfile"]["extensions"][0][
            "properties"]["protectedSettings"]["script"]).decode()
        self.assertIn(f"account = {azurite.ACCOUNT}\n", script)
        self.assertIn(f"blob_endpoint = {self.az.endpoint}\n", script)

        # nothing distributed yet: nothing used
        r = self.cmgctl("status", "--settings", self.settings, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        storage = json.loads(r.stdout)["alerts"]["storage"]
        self.assertEqual((storage["used"], storage["threshold"], storage["state"]),
                         (0, 1 << 30, "ok"), storage)

        # an operator distributes into the deployment's storage by naming the deployment
        pkg = os.path.join(self.dir, "PS100001")
        os.makedirs(os.path.join(pkg, "sub"))
        files = {"a.bin": os.urandom(3000), "sub/b.txt": b"hello from the deployment\n"}
        for rel, data in files.items():
            with open(os.path.join(pkg, rel), "wb") as f:
                f.write(data)
        dep = ["--deployment", self.state, "--settings", self.settings]
        r = self.cmgctl("content", "distribute", *dep, "PS100001", pkg)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.az.get_blob("content", "content/PS100001/a.bin"),
                         files["a.bin"], "in the container create made")
        manifest = self.az.get_blob("content", "packages/PS100001.json")
        used = sum(len(d) for d in files.values()) + len(manifest)

        r = self.cmgctl("status", "--settings", self.settings, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        storage = json.loads(r.stdout)["alerts"]["storage"]
        self.assertEqual((storage["used"], storage["threshold"], storage["state"],
                          storage["warning_percent"], storage["critical_percent"]),
                         (used, 1 << 30, "ok", 40, 80), storage)
        self.assertAlmostEqual(storage["percent"], used * 100 / (1 << 30))
        text = self.cmgctl("status", "--settings", self.settings).stdout
        self.assertRegex(text, r"storage: 0\.000 GB used of the 1 GB alert threshold "
                               r"\(0\.0 %\): ok")
        outputs = [r.stdout, r.stderr, text]

        r = self.cmgctl("content", "list", *dep, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        listing = json.loads(r.stdout)
        self.assertEqual((listing["storage"]["used"], listing["storage"]["alert"]),
                         (used, 1 << 30))
        outputs += [r.stdout, r.stderr]
        r = self.cmgctl("content", "remove", *dep, "PS100001")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.az.list_blobs("content"), [])
        outputs += [r.stdout, r.stderr]

        # an Azure deployment's store needs the settings (the credentials), and says so
        r = self.cmgctl("content", "list", "--deployment", self.state)
        self.assertEqual(r.returncode, 1)
        self.assertIn("--settings FILE", r.stderr)

        for text in outputs:
            self.assertNotIn(azurite.KEY, text)
        for name in os.listdir(self.state):
            with open(os.path.join(self.state, name), "rb") as f:
                self.assertNotIn(azurite.KEY.encode(), f.read(), name)


if __name__ == "__main__":
    unittest.main()
