"""cmgctl create/scale/status/delete --provider azure against the scripted ARM endpoint
(armfake): request order and bodies, long-running operations, 429, a failure mid-way then a
re-run that converges, a region mismatch that stops before any write, and settings refused
before any call."""

import json
import os
import unittest

import cmgtest as ct
from armfake import ArmFake

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
        self.assertEqual(self.arm.requests, [])


if __name__ == "__main__":
    unittest.main()
