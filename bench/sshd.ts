// A private sshd with the lab's binary and sshd_config (same MaxSessions, LogLevel VERBOSE)
// on another loopback port with its own log, so that its handshakes and remote commands
// can be counted exactly while other sessions use the lab's sshd.
import * as childProcess from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { run } from "../test/support/lab";
import { lab } from "./config";

/** Where the benchmark reaches a host over SSH: the address, and a known_hosts file the system ssh trusts there. */
export interface SshEndpoint {
    host: string;
    port: number;
    knownHosts: string;
}

export interface BenchSshd extends SshEndpoint {
    /** The public host key line it presents (the lab's, or its own). */
    hostKey: string;
    pid: number;
    log: string;
    dir: string;
    stop(): Promise<void>;
}

function freePort(): Promise<number> {
    return new Promise((res, rej) => {
        const s = net.createServer();
        s.once("error", rej);
        s.listen(0, "127.0.0.1", () => {
            const p = (s.address() as net.AddressInfo).port;
            s.close(() => res(p));
        });
    });
}

function canConnect(port: number): Promise<boolean> {
    return new Promise((res) => {
        const c = net.connect(port, "127.0.0.1");
        c.once("connect", () => {
            c.destroy();
            res(true);
        });
        c.once("error", () => res(false));
    });
}

/**
 * An sshd of the benchmark's own on a free loopback port. With ownHostKey it gets a host key
 * of its own (a fresh ed25519 key in its folder) instead of the lab's: a separate SSH target,
 * as the hosts50 phase needs fifty of.
 */
export async function startSshd(opts: { ownHostKey?: boolean } = {}): Promise<BenchSshd> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bench-sshd-"));
    const port = await freePort();
    const base = fs.readFileSync(path.join(lab.labDir, "sshd_config"), "utf8");
    if (!/^Port \d+$/m.test(base) || !/^PidFile /m.test(base) || !/^HostKey /m.test(base))
        throw new Error("unexpected lab sshd_config: no Port, PidFile or HostKey line");
    let config = base.replace(/^Port \d+$/m, `Port ${port}`).replace(/^PidFile .*$/m, `PidFile "${dir}/sshd.pid"`);
    let hostKey = lab.hostKey;
    if (opts.ownHostKey) {
        const keyFile = path.join(dir, "ssh_host_ed25519_key");
        const r = await run("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", keyFile]);
        if (r.code !== 0) throw new Error(`ssh-keygen failed: ${r.stderr.trim()}`);
        hostKey = fs.readFileSync(`${keyFile}.pub`, "utf8").trim().split(" ").slice(0, 2).join(" ");
        config = config.replace(/^HostKey .*$/m, `HostKey "${keyFile}"`);
    }
    const cfg = path.join(dir, "sshd_config");
    fs.writeFileSync(cfg, config);
    const logFile = path.join(dir, "sshd.log");
    fs.writeFileSync(logFile, "");
    const knownHosts = path.join(dir, "known_hosts");
    fs.writeFileSync(knownHosts, `[127.0.0.1]:${port} ${hostKey}\n`);
    const proc = childProcess.spawn("/usr/sbin/sshd", ["-D", "-f", cfg, "-E", logFile], { stdio: "ignore" });
    let exited = false;
    const gone = new Promise<void>((r) =>
        proc.once("exit", () => {
            exited = true;
            r();
        }),
    );
    const stop = async () => {
        if (!exited) {
            proc.kill("SIGTERM");
            await Promise.race([gone, new Promise((r) => setTimeout(r, 5000))]);
        }
        if (!exited) {
            proc.kill("SIGKILL");
            await gone;
        }
        fs.rmSync(dir, { recursive: true, force: true });
    };
    for (let i = 0; i < 100; i++) {
        if (exited) break;
        if (await canConnect(port)) return { host: "127.0.0.1", port, hostKey, pid: proc.pid!, log: logFile, knownHosts, dir, stop };
        await new Promise((r) => setTimeout(r, 50));
    }
    const text = fs.readFileSync(logFile, "utf8");
    await stop();
    throw new Error(`the benchmark's sshd did not start on 127.0.0.1:${port}: ${text.trim()}`);
}

/** The same host through another loopback port (a proxy in front of it): the system ssh trusts its key there too. */
export function viaLoopbackPort(endpoint: SshEndpoint, port: number): SshEndpoint {
    fs.appendFileSync(endpoint.knownHosts, `[127.0.0.1]:${port} ${lab.hostKey}\n`);
    return { host: "127.0.0.1", port, knownHosts: endpoint.knownHosts };
}

/**
 * The lab host's own sshd (BENCH_HOST names a host this machine reaches over SSH): a copy of
 * its known_hosts the benchmark may add to, and the log that sshd writes (LogLevel VERBOSE,
 * shared with everyone else who uses that host).
 */
export function labHostEndpoint(): SshEndpoint & { log: string; dispose(): void } {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bench-host-"));
    const knownHosts = path.join(dir, "known_hosts");
    fs.copyFileSync(lab.knownHostsPath, knownHosts);
    const log = path.join(path.dirname(lab.sshdPidPath), "sshd.log");
    if (!fs.existsSync(log)) throw new Error(`no sshd log at ${log}: the lab writes its sshd's log next to its pid file`);
    return { host: lab.host, port: lab.port, knownHosts, log, dispose: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Counts of sshd log events since a mark. With ports, only the events of connections
 * from those client ports (an sshd that other sessions share: LogLevel VERBOSE names the
 * client's port on every line counted here).
 */
export class SshdLog {
    constructor(private readonly file: string) {}
    mark(): number {
        return fs.statSync(this.file).size;
    }
    since(mark: number, ports?: ReadonlySet<number>): { handshakes: number; commands: number } {
        const fd = fs.openSync(this.file, "r");
        try {
            const size = fs.fstatSync(fd).size;
            const buf = Buffer.alloc(Math.max(0, size - mark));
            fs.readSync(fd, buf, 0, buf.length, mark);
            const text = buf.toString("utf8");
            const count = (re: RegExp) => [...text.matchAll(re)].filter((m) => !ports || ports.has(Number(m[1]))).length;
            return {
                handshakes: count(/^Accepted publickey for \S+ from \S+ port (\d+)/gm),
                commands: count(/^Starting session: command for \S+ from \S+ port (\d+)/gm),
            };
        } finally {
            fs.closeSync(fd);
        }
    }
}

/** The local ports of a process's established TCP connections to host:port (ss), e.g. a pooled SSH connection. */
export async function clientPorts(pid: number, host: string, port: number): Promise<number[]> {
    const r = await run("/usr/bin/ss", ["-tnpH", "state", "established", "dst", `${host}:${port}`]);
    if (r.code !== 0) throw new Error(`ss failed (exit ${r.code}): ${r.stderr.trim()}`);
    return r.stdout
        .split("\n")
        .filter((l) => l.includes(`pid=${pid},`))
        .map((l) => Number(/^\s*\S+\s+\S+\s+\S+:(\d+)\s/.exec(l)?.[1]))
        .filter((n) => n > 0);
}
