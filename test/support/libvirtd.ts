// Restarting a lab host's libvirtd from a test, as briefly as possible and never
// leaving it down. Other test runs share this libvirtd, so every restart runs
// under a host-wide lock file, and whatever happens, libvirtd is started again
// (`bash scripts/lab.sh up` starts it under tini, as the lab always does).
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { loadLab, repoRoot, run, sleep, virshLocal } from "./lab";

/** Held by whoever restarts libvirtd on this host; created with O_EXCL, removed when done. */
export const RESTART_LOCK = "/tmp/pulumi-libvirt-libvirtd-restart.lock";

/** Alive, and not a zombie (kill -0 succeeds on zombies). */
export function pidAlive(pid: number): boolean {
    try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
        const st = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
        return st !== "Z" && st !== "X";
    } catch {
        return false;
    }
}

/** A process in the root of the lab host under test (this machine's "/" for the first host). */
function inHostRoot(pid: number): boolean {
    try {
        return fs.readlinkSync(`/proc/${pid}/root`) === (loadLab().rootDir ?? "/");
    } catch {
        return false;
    }
}

/** Each lab host keeps its daemons' pid files beside its sshd's. */
const hostStateDir = () => path.dirname(loadLab().sshdPidPath);

/**
 * The PID of the libvirtd of the lab host under test: the one the lab started (its
 * pid file), else the only libvirtd in that host's root (for the first host, one the
 * lab found running: a system service, or another checkout's lab).
 */
export function libvirtdPid(): number | undefined {
    try {
        const pid = Number(fs.readFileSync(path.join(hostStateDir(), "libvirtd.pid"), "utf8").trim());
        if (pid > 0 && pidAlive(pid)) return pid;
    } catch {
        /* no PID file: the lab did not start it */
    }
    try {
        const pids = execFileSync("pgrep", ["-x", "libvirtd"], { encoding: "utf8" })
            .split("\n")
            .filter(Boolean)
            .map(Number)
            .filter((p) => pidAlive(p) && inHostRoot(p));
        return pids.length === 1 ? pids[0] : undefined;
    } catch {
        return undefined; // pgrep found none
    }
}

/** True when `virsh list` answers within the time limit. */
export async function libvirtdAnswers(timeoutMs = 10_000): Promise<boolean> {
    const r = await virshLocal(["list", "--name"], { timeoutMs });
    return r.code === 0;
}

/**
 * Take the host-wide restart lock, run fn, release the lock. Waits while another
 * holder has it; a lock whose holder (the PID written in it) is gone is stale.
 */
export async function withRestartLock<T>(fn: () => Promise<T>, waitMs = 10 * 60_000): Promise<T> {
    const until = Date.now() + waitMs;
    let fd: number | undefined;
    while (fd === undefined) {
        try {
            fd = fs.openSync(RESTART_LOCK, "wx");
        } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
            let holder = NaN;
            try {
                holder = Number(/pid=(\d+)/.exec(fs.readFileSync(RESTART_LOCK, "utf8"))?.[1]);
            } catch {
                /* removed meanwhile */
            }
            if (Number.isInteger(holder) && !pidAlive(holder)) {
                fs.rmSync(RESTART_LOCK, { force: true });
                continue;
            }
            if (Date.now() > until) throw new Error(`${RESTART_LOCK} is still held after ${waitMs / 1000} s`);
            await sleep(100);
        }
    }
    try {
        fs.writeSync(fd, `pid=${process.pid} ${new Date().toISOString()} test/faults.test.ts\n`);
        fs.closeSync(fd);
        return await fn();
    } finally {
        fs.rmSync(RESTART_LOCK, { force: true });
    }
}

/** Kill the lab's libvirtd with this signal and wait until it is gone (SIGKILL after 20 s). */
export async function stopLibvirtd(signal: NodeJS.Signals): Promise<number | undefined> {
    const pid = libvirtdPid();
    if (pid === undefined) return undefined;
    try {
        process.kill(pid, signal);
    } catch {
        /* already gone */
    }
    for (let i = 0; pidAlive(pid); i++) {
        if (i === 400) {
            try {
                process.kill(pid, "SIGKILL");
            } catch {
                /* gone */
            }
        }
        if (i > 600) throw new Error(`libvirtd ${pid} does not exit`);
        await sleep(50);
    }
    return pid;
}

/**
 * Start the lab's libvirtd again, exactly as start_libvirtd (scripts/lab/lib.sh)
 * does (setsid tini -s -- libvirtd -p .lab/libvirtd.pid, under .lab/lab.lock so
 * a concurrent `lab.sh up` can't start a second one), and wait until it answers.
 * That takes about 0.3 s, where a whole `lab.sh up` takes about 4 s; if it
 * fails, `lab.sh up` is the fallback.
 */
export async function startLibvirtd(): Promise<void> {
    const lab = loadLab();
    const labDir = lab.labDir;
    if (lab.rootDir) {
        // A host in its own root: its own script starts what is not running there (about 2 s).
        if (await libvirtdAnswers(5_000)) return;
        const r = await run("/bin/bash", [path.join(repoRoot(), "scripts", "lab", "host13.sh"), "up", labDir], { timeoutMs: 300_000 });
        if (r.code !== 0) throw new Error(`host13.sh up failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`);
        for (let i = 0; i < 100; i++) {
            if (await libvirtdAnswers()) return;
            await sleep(100);
        }
        throw new Error(`libvirtd of ${lab.name} does not answer after host13.sh up`);
    }
    const script = `set -u
exec 9>"$1/lab.lock"; flock -w 120 9 || exit 3
if ! timeout 5 virsh -c qemu:///system version >/dev/null 2>&1; then
  rm -f "$1/libvirtd.pid" "$1/tini.pid"
  printf '\n==== %s test/support/libvirtd.ts starting libvirtd\n' "$(date -Is)" >>"$1/libvirtd.log"
  setsid tini -s -- /usr/sbin/libvirtd -p "$1/libvirtd.pid" </dev/null >>"$1/libvirtd.log" 2>&1 9>&- &
  echo $! >"$1/tini.pid"
fi
for i in $(seq 300); do timeout 5 virsh -c qemu:///system list --name >/dev/null 2>&1 && exit 0; sleep 0.05; done
exit 4`;
    for (let attempt = 0; attempt < 3; attempt++) {
        const r = await run("/bin/bash", ["-c", script, "start-libvirtd", labDir], { timeoutMs: 180_000 });
        if (r.code !== 0 || !(await libvirtdAnswers())) break;
        // libvirt 9.0 was seen to segfault in its qemu driver while it reconnected to a domain whose
        // block commit had been cut off (dmesg: init-<domain> ... libvirt_driver_qemu.so): the daemon
        // answers, then dies. Give the reconnect time, and start it again if it died.
        await sleep(1500);
        if (await libvirtdAnswers()) return;
        console.log("      (libvirtd died again right after its restart, while reconnecting to its domains: starting it once more)");
    }
    const up = await run("/bin/bash", [path.join(repoRoot(), "scripts", "lab.sh"), "up"], { timeoutMs: 300_000 });
    if (up.code !== 0) throw new Error(`lab.sh up failed (exit ${up.code}): ${(up.stderr || up.stdout).trim()}`);
    for (let i = 0; i < 100; i++) {
        if (await libvirtdAnswers()) return;
        await sleep(100);
    }
    throw new Error("libvirtd does not answer after lab.sh up");
}

/**
 * When libvirtd does not answer (hung, for example in a job whose client left),
 * kill it via its PID file and start it again. Returns true if it had to.
 */
export async function recoverHungLibvirtd(): Promise<boolean> {
    if (await libvirtdAnswers(15_000)) return false;
    await withRestartLock(async () => {
        if (await libvirtdAnswers(5_000)) return;
        try {
            await stopLibvirtd("SIGKILL");
        } finally {
            await startLibvirtd();
        }
    });
    return true;
}
