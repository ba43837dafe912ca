// The lab's sshd sessions, found from the client side: cut one client's SSH
// connections (and no one else's) in the middle of a command.
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import { loadLab } from "./lab";

const commOf = (pid: number | string) => {
    try {
        return fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim();
    } catch {
        return "";
    }
};

/**
 * SIGKILL one SSH connection's sshd processes: the listener's child and its sshd
 * descendants. OpenSSH 10's unprivileged sshd-session holds the connection too, so
 * killing the listener's child alone would leave the connection up. The commands the
 * connection runs are not killed: they live on without their client.
 */
export function killConnection(sessionRoot: number): void {
    const doomed = [sessionRoot];
    for (let i = 0; i < doomed.length; i++) {
        let kids: string[] = [];
        try {
            kids = execFileSync("pgrep", ["-P", String(doomed[i])], { encoding: "utf8" })
                .split("\n")
                .filter(Boolean);
        } catch {
            /* none */
        }
        doomed.push(...kids.filter((k) => commOf(k).startsWith("sshd")).map(Number));
    }
    for (const p of doomed) {
        try {
            process.kill(p, "SIGKILL");
        } catch {
            /* gone */
        }
    }
}

function socketInodes(pid: number): Set<string> {
    const out = new Set<string>();
    let fds: string[] = [];
    try {
        fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
        return out;
    }
    for (const fd of fds) {
        try {
            const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
            if (m) out.add(m[1]!);
        } catch {
            /* closed meanwhile */
        }
    }
    return out;
}

/**
 * Kill the sshd sessions serving the TCP connections that process `client` has
 * open to the lab's sshd (matched through /proc/net/tcp), and no others: other
 * test runs on the same sshd keep their connections. Returns how many it killed.
 */
export function killSessionsOfClient(client: number): number {
    const lab = loadLab();
    // Each side's sockets are in its own network namespace's table (a host in its own namespace).
    const rowsOf = (pid: number | string) =>
        fs
            .readFileSync(`/proc/${pid}/net/tcp`, "utf8")
            .split("\n")
            .slice(1)
            .map((l) => l.trim().split(/\s+/))
            .filter((f) => f.length > 9);
    const port = (addr: string) => parseInt(addr.split(":")[1]!, 16);
    const listener = fs.readFileSync(lab.sshdPidPath, "utf8").trim();
    const mine = socketInodes(client);
    const clientPorts = new Set(
        rowsOf(client)
            .filter((f) => mine.has(f[9]!) && port(f[2]!) === lab.port)
            .map((f) => port(f[1]!)),
    );
    const serverInodes = new Set(
        rowsOf(listener)
            .filter((f) => port(f[1]!) === lab.port && clientPorts.has(port(f[2]!)))
            .map((f) => f[9]!),
    );
    let kids: string[] = [];
    try {
        kids = execFileSync("pgrep", ["-P", listener], { encoding: "utf8" }).split("\n").filter(Boolean);
    } catch {
        /* none */
    }
    let killed = 0;
    for (const k of kids) {
        if ([...socketInodes(Number(k))].some((i) => serverInodes.has(i))) {
            killConnection(Number(k));
            killed++;
        }
    }
    return killed;
}
