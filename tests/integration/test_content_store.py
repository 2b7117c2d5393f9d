"""cmgctl content distribute / list / remove against Azure Blob storage (Azurite on loopback)
and against the folder store: uploads in one Put Blob and in blocks, skipping what is already
there, removing what left the folder, refusing bad input with exit status 1."""

import hashlib
import json
import os
import shutil
import unittest
import urllib.error
import urllib.request

import azurite
import cmgtest as ct

CONTAINER = "cmgtest"
SINGLE_MAX = 1 << 20   # upload_single_max = 1m
BLOCK = 256 << 10      # upload_block = 256k


def make_tree(root):
    """A package folder: nested folders, an empty file, a file larger than upload_single_max
    (so it goes up in blocks) and a name with a space. Returns {relative path: bytes}."""
    files = {
        "setup.exe": os.urandom(1000),
        "sub/deeper/empty.txt": b"",
        "sub/big file.bin": os.urandom(SINGLE_MAX + 3 * BLOCK + 12345),
        "sub/exactly-single-max.bin": os.urandom(SINGLE_MAX),
        "z.cab": b"cabinet" * 100,
    }
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return files


def cmgctl(*args, timeout=120):
    return ct.run([ct.CMGCTL, "content", *args], timeout=timeout)


class Common:
    """Tests that hold for every store; subclasses say how to configure and read it."""

    def setUp(self):
        self.dir = ct.mkdtemp(prefix="content-")
        self.pkg = os.path.join(self.dir, "pkg")
        self.files = make_tree(self.pkg)
        self.ini = os.path.join(self.dir, "gateway.ini")
        self.write_ini(self.content_section())

    def write_ini(self, section, extra=""):
        # other sections of a gateway's file are skipped by the content verbs
        text = ct.ini_text({"gateway": {"workers": 1}, "content": section}) + extra
        with open(self.ini, "w") as f:
            f.write(text)

    def distribute(self, pid="PS100001", *more, json_out=True):
        args = ["distribute", "-c", self.ini, pid, self.pkg, *more]
        if json_out:
            args.append("--json")
        return cmgctl(*args)

    def ok(self, r):
        self.assertEqual(r.returncode, 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}")
        return r

    def check_stored(self, pid, files):
        """Every file is in storage with its bytes and MD5; the manifest says so too."""
        names = sorted(self.stored_names())
        want = sorted([f"content/{pid}/{rel}" for rel in files] + [f"packages/{pid}.json"])
        self.assertEqual(names, want)
        manifest = json.loads(self.read_blob(f"packages/{pid}.json"))
        self.assertEqual(manifest["format"], 1)
        self.assertEqual(manifest["package"], pid)
        self.assertEqual(manifest["size"], sum(len(d) for d in files.values()))
        self.assertRegex(manifest["distributed"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        paths = [f["path"] for f in manifest["files"]]
        self.assertEqual(paths, sorted(files))
        for entry in manifest["files"]:
            data = files[entry["path"]]
            got = self.read_blob(f"content/{pid}/{entry['path']}")
            self.assertEqual(len(got), len(data), entry["path"])
            self.assertEqual(hashlib.md5(got).digest(), hashlib.md5(data).digest(), entry["path"])
            self.assertEqual(entry["size"], len(data))
            self.assertEqual(entry["md5"], azurite.md5_b64(data), entry["path"])
            self.assertTrue(entry["etag"].startswith('"') and entry["etag"].endswith('"'))
            self.assertGreater(entry["last_modified"], 1600000000)
        return manifest

    # -- the tests

    def test_distribute_list_rerun_prune_remove(self):
        r = self.ok(self.distribute("PS100001", "--content-id", "Content_9.1"))
        rep = json.loads(r.stdout)
        self.assertEqual(rep["files"], len(self.files))
        self.assertEqual(rep["uploaded"], len(self.files))
        self.assertEqual(rep["unchanged"], 0)
        total = sum(len(d) for d in self.files.values())
        self.assertEqual(rep["size"], total)
        self.assertEqual(rep["storage"]["state"], "ok")
        self.assertGreaterEqual(rep["storage"]["used"], total)
        m = self.check_stored("PS100001", self.files)
        self.assertEqual(m["content_id"], "Content_9.1")
        self.after_first_distribute()

        # list: the package, complete, with its size; the storage line
        r = self.ok(cmgctl("list", "-c", self.ini, "--json"))
        rep = json.loads(r.stdout)
        self.assertEqual([p["package"] for p in rep["packages"]], ["PS100001"])
        p = rep["packages"][0]
        self.assertEqual((p["state"], p["files"], p["size"]), ("complete", len(self.files), total))
        self.assertEqual(p["distributed"], m["distributed"])
        r = self.ok(cmgctl("list", "-c", self.ini))
        self.assertRegex(r.stdout, r"PS100001\s+5\s+")
        self.assertIn("complete", r.stdout)
        self.assertRegex(r.stdout, r"storage used: .* alert threshold .*: ok")

        # a re-run uploads nothing; a changed file is uploaded again, alone
        r = self.ok(self.distribute())
        rep = json.loads(r.stdout)
        self.assertEqual((rep["uploaded"], rep["unchanged"]), (0, len(self.files)))
        self.files["setup.exe"] = os.urandom(999)
        with open(os.path.join(self.pkg, "setup.exe"), "wb") as f:
            f.write(self.files["setup.exe"])
        rep = json.loads(self.ok(self.distribute()).stdout)
        self.assertEqual((rep["uploaded"], rep["unchanged"]), (1, len(self.files) - 1))

        # a file removed from the folder is removed from storage
        os.unlink(os.path.join(self.pkg, "z.cab"))
        del self.files["z.cab"]
        rep = json.loads(self.ok(self.distribute()).stdout)
        self.assertEqual(rep["removed"], 1)
        self.check_stored("PS100001", self.files)

        # remove: everything of the package goes
        r = self.ok(cmgctl("remove", "-c", self.ini, "PS100001"))
        self.assertIn("removed PS100001", r.stdout)
        self.assertEqual(self.stored_names(), [])
        r = cmgctl("remove", "-c", self.ini, "PS100001")
        self.assertEqual(r.returncode, 1)
        self.assertIn("PS100001 is not in", r.stderr)

    def test_incomplete_package_is_flagged(self):
        self.ok(self.distribute("P2"))
        self.delete_blob("packages/P2.json")
        rep = json.loads(self.ok(cmgctl("list", "-c", self.ini, "--json")).stdout)
        p = rep["packages"][0]
        self.assertEqual((p["package"], p["state"]), ("P2", "incomplete"))
        self.assertEqual(p["files"], len(self.files))
        r = self.ok(cmgctl("list", "-c", self.ini))
        self.assertIn("incomplete: no manifest", r.stdout)
        # a re-run completes it without uploading the files again
        rep = json.loads(self.ok(self.distribute("P2")).stdout)
        self.assertEqual(rep["uploaded"], 0)
        rep = json.loads(self.ok(cmgctl("list", "-c", self.ini, "--json")).stdout)
        self.assertEqual(rep["packages"][0]["state"], "complete")

    def test_storage_alert_states(self):
        self.ok(self.distribute("P3"))
        used = json.loads(self.ok(cmgctl("list", "-c", self.ini, "--json")).stdout)["storage"]["used"]
        # an alert threshold just above twice the use: over 50 % is a warning, not critical
        for alert, state in ((used * 100, "ok"), (used * 100 // 60, "warning"),
                             (used * 100 // 95, "critical")):
            if alert < (1 << 20):
                continue  # the smallest threshold settings accept
            self.write_ini(self.content_section() | {"storage_alert": str(alert)})
            rep = json.loads(self.ok(cmgctl("list", "-c", self.ini, "--json")).stdout)
            self.assertEqual(rep["storage"]["state"], state, f"alert {alert}, used {used}")
            self.assertEqual(rep["storage"]["alert"], alert)
        self.write_ini(self.content_section() | {"storage_alert": "1m"})
        r = self.ok(cmgctl("list", "-c", self.ini))
        self.assertRegex(r.stdout, r"storage used: .*: critical \(warning at 50 %, critical at 90 %\)")

    def test_refusals(self):
        # bad package id, missing folder, a symbolic link, usage errors
        r = cmgctl("distribute", "-c", self.ini, "bad/id", self.pkg)
        self.assertEqual(r.returncode, 1)
        self.assertIn('"bad/id" is not a package id', r.stderr)
        r = cmgctl("distribute", "-c", self.ini, "P4", os.path.join(self.dir, "missing"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("No such file or directory", r.stderr)
        os.symlink("setup.exe", os.path.join(self.pkg, "link.exe"))
        r = cmgctl("distribute", "-c", self.ini, "P4", self.pkg)
        self.assertEqual(r.returncode, 1)
        self.assertIn("link.exe: a symbolic link", r.stderr)
        self.assertEqual(self.stored_names(), [])  # refused before anything was uploaded
        r = cmgctl("distribute", "-c", self.ini, "P4")
        self.assertEqual(r.returncode, 2)
        self.assertIn("missing FOLDER", r.stderr)
        r = cmgctl("list")
        self.assertEqual(r.returncode, 2)
        self.assertIn("-c GATEWAY.INI or --deployment STATE_DIR", r.stderr)
        r = cmgctl("remove", "-c", self.ini, "P4", "--bogus")
        self.assertEqual(r.returncode, 2)
        r = cmgctl("remove", "-c", self.ini, "..")
        self.assertEqual(r.returncode, 1)
        # a configuration error names file, line and key
        self.write_ini(self.content_section() | {"storage_warning": "95"})
        r = cmgctl("list", "-c", self.ini)
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, r"gateway\.ini:\d+: content\.storage_warning: 95 % is not below")
        self.write_ini(self.content_section() | {"timeout": "forever"})
        r = cmgctl("list", "-c", self.ini)
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, r"gateway\.ini:\d+: content\.timeout")


class BlobStoreTest(Common, unittest.TestCase):
    az = None

    @classmethod
    def setUpClass(cls):
        cls.az = azurite.Azurite(scale=ct.SCALE).start()

    @classmethod
    def tearDownClass(cls):
        cls.az.cleanup()

    def setUp(self):
        # one container per test, so tests do not see each other's packages
        self.container = f"t{os.urandom(5).hex()}"
        super().setUp()

    def content_section(self):
        return self.az.content_settings(self.container, upload_single_max="1m",
                                        upload_block="256k", timeout="20s")

    def stored_names(self):
        return self.az.list_blobs(self.container)

    def read_blob(self, name):
        return self.az.get_blob(self.container, name)

    def delete_blob(self, name):
        st, h, _ = self.az.request("DELETE", self.container, name)
        self.assertEqual(st, 202, h.get("x-ms-error-code"))

    def after_first_distribute(self):
        # the big file went up in blocks (Put Block + Put Block List), the others in one PUT
        reqs = self.az.requests()
        big = f"/{azurite.ACCOUNT}/{self.container}/content/PS100001/sub/big file.bin"
        blocks = [q for m, p, q in reqs if m == "PUT" and p == big and "comp=block&" in q + "&"]
        lists = [q for m, p, q in reqs if m == "PUT" and p == big and "comp=blocklist" in q]
        want = -(-len(self.files["sub/big file.bin"]) // BLOCK)
        self.assertEqual(len(blocks), want)
        self.assertEqual(len(lists), 1)
        single = f"/{azurite.ACCOUNT}/{self.container}/content/PS100001/sub/exactly-single-max.bin"
        self.assertEqual([q for m, p, q in reqs if m == "PUT" and p == single], [""])
        # the blob's own Content-MD5 is the whole file's, both ways
        for rel in ("sub/big file.bin", "setup.exe", "sub/deeper/empty.txt"):
            st, h, _ = self.az.request("HEAD", self.container, f"content/PS100001/{rel}")
            self.assertEqual(st, 200)
            self.assertEqual(h.get("content-md5"), azurite.md5_b64(self.files[rel]), rel)

    def test_bad_account_key(self):
        bad = self.content_section() | {"account_key": azurite.KEY.replace("Eby8", "Eby9")}
        self.write_ini(bad)
        r = cmgctl("distribute", "-c", self.ini, "P5", self.pkg)
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, r"403 AuthorizationFailure")
        r = cmgctl("list", "-c", self.ini)
        self.assertEqual(r.returncode, 1)
        self.assertIn("403 AuthorizationFailure", r.stderr)

    def test_storage_unreachable(self):
        port = ct.free_port()
        self.write_ini(self.content_section() |
                       {"blob_endpoint": f"http://127.0.0.1:{port}/{azurite.ACCOUNT}"})
        r = cmgctl("list", "-c", self.ini)
        self.assertEqual(r.returncode, 1)
        self.assertIn("onnect", r.stderr)  # libcurl: "Couldn't connect to server"

    def test_sas_token_store(self):
        # a store that holds a SAS instead of the key: list works through it
        self.ok(self.distribute("P6"))
        st = self.sas_for_container()
        self.write_ini(self.content_section() | {"account_key": None, "sas": st})
        rep = json.loads(self.ok(cmgctl("list", "-c", self.ini, "--json")).stdout)
        self.assertEqual(rep["packages"][0]["state"], "complete")

    def sas_for_container(self):
        """A container SAS (sr=c, sp=rwdl) signed here, as an operator would paste it."""
        import base64
        import hmac
        import time
        import urllib.parse
        se = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        sts = "\n".join(["rwdl", "", se, f"/blob/{azurite.ACCOUNT}/{self.container}", "", "",
                         "http", azurite.API_VERSION, "c", "", "", "", "", "", "", ""])
        sig = base64.b64encode(hmac.new(base64.b64decode(azurite.KEY), sts.encode(),
                                        "sha256").digest()).decode()
        return urllib.parse.urlencode({"sv": azurite.API_VERSION, "sr": "c", "sp": "rwdl",
                                       "se": se, "spr": "http", "sig": sig})

    def test_sas_url_reads_the_blob(self):
        """cmgctl content url: the SAS URL the gateway would hand out reads the file with a
        plain GET, and only that file."""
        self.ok(self.distribute("P7"))
        for rel in ("sub/big file.bin", "sub/deeper/empty.txt"):
            url = self.ok(cmgctl("url", "-c", self.ini, "P7", rel)).stdout.strip()
            self.assertTrue(url.startswith(self.az.endpoint + "/"), url)
            self.assertIn("sr=b&sp=r&", url)
            self.assertIn("spr=https%2Chttp", url)  # the endpoint is plain http
            with urllib.request.urlopen(url, timeout=ct.t(30)) as resp:
                self.assertEqual(resp.read(), self.files[rel])
        other = url.replace("sub/deeper/empty.txt?", "setup.exe?")
        self.assertNotEqual(other, url)
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(other, timeout=ct.t(30))
        self.assertEqual(cm.exception.code, 403)
        r = cmgctl("url", "-c", self.ini, "P7", "../x")
        self.assertEqual(r.returncode, 1)


class FolderStoreTest(Common, unittest.TestCase):
    def content_section(self):
        # relative: resolved against the configuration file's folder
        return {"store": "folder", "folder": "store"}

    @property
    def root(self):
        return os.path.join(self.dir, "store")

    def stored_names(self):
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            if os.path.relpath(dirpath, self.root) == ".":
                dirnames[:] = [d for d in dirnames if d != ".cmg"]
            for fn in filenames:
                out.append(os.path.relpath(os.path.join(dirpath, fn), self.root))
        return sorted(out)

    def read_blob(self, name):
        with open(os.path.join(self.root, name), "rb") as f:
            return f.read()

    def delete_blob(self, name):
        os.unlink(os.path.join(self.root, name))

    def test_no_sas_urls(self):
        self.ok(self.distribute("P8"))
        r = cmgctl("url", "-c", self.ini, "P8", "setup.exe")
        self.assertEqual(r.returncode, 1)
        self.assertIn("SAS URLs need a blob store", r.stderr)

    def after_first_distribute(self):
        # nothing half-written is left behind
        tmp = os.path.join(self.root, ".cmg", "tmp")
        self.assertEqual(os.listdir(tmp) if os.path.isdir(tmp) else [], [])


if __name__ == "__main__":
    unittest.main()
