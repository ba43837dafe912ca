// A private sshd with the lab's binary and sshd_config (same MaxSessions, LogLevel VERBOSE)
// on another loopback port with its own log, so that its handshakes and remote commands
// can be counted exactly while other sessions use the lab's sshd.
import * as childProcess from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { lab } from "./config";

export interface BenchSshd {
    port: number;
    pid: number;
    log: string;
    knownHosts: string;
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

export async function startSshd(): Promise<BenchSshd> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bench-sshd-"));
    const port = await freePort();
    const base = fs.readFileSync(path.join(lab.labDir, "sshd_config"), "utf8");
    if (!/^Port \d+$/m.test(base) || !/^PidFile /m.test(base)) throw new Error("unexpected lab sshd_config: no Port or PidFile line");
    const cfg = path.join(dir, "sshd_config");
    fs.writeFileSync(cfg, base.replace(/^Port \d+$/m, `Port ${port}`).replace(/^PidFile .*$/m, `PidFile "${dir}/sshd.pid"`));
    const logFile = path.join(dir, "sshd.log");
    fs.writeFileSync(logFile, "");
    const knownHosts = path.join(dir, "known_hosts");
    fs.writeFileSync(knownHosts, `[127.0.0.1]:${port} ${lab.hostKey}\n`);
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
        if (await canConnect(port)) return { port, pid: proc.pid!, log: logFile, knownHosts, dir, stop };
        await new Promise((r) => setTimeout(r, 50));
    }
    const text = fs.readFileSync(logFile, "utf8");
    await stop();
    throw new Error(`the benchmark's sshd did not start on 127.0.0.1:${port}: ${text.trim()}`);
}

/** Trusts the sshd's host key also at another loopback port (a proxy in front of it), for the system ssh. */
export function trustPort(sshd: BenchSshd, port: number): void {
    fs.appendFileSync(sshd.knownHosts, `[127.0.0.1]:${port} ${lab.hostKey}\n`);
}

/** Counts of sshd log events since a mark. */
export class SshdLog {
    constructor(private readonly file: string) {}
    mark(): number {
        return fs.statSync(this.file).size;
    }
    since(mark: number): { handshakes: number; commands: number } {
        const fd = fs.openSync(this.file, "r");
        try {
            const size = fs.fstatSync(fd).size;
            const buf = Buffer.alloc(Math.max(0, size - mark));
            fs.readSync(fd, buf, 0, buf.length, mark);
            const text = buf.toString("utf8");
            return {
                handshakes: (text.match(/^Accepted publickey for /gm) ?? []).length,
                commands: (text.match(/^Starting session: command /gm) ?? []).length,
            };
        } finally {
            fs.closeSync(fd);
        }
    }
}
