// Preview only reads: check and diff in the lost-record case (the domain undefined and defined again under a new UUID,
// libvirt with no record, the data still in the images) send the host nothing but reads. A scripted host stands in for
// the processes the local transport starts, below every layer of the provider, long-lived virsh and sh shells included;
// every command, and every line written into a shell, is seen on the provider's diagnostics channel
// (provider/host/diagnostics.ts). A write planted in a diff is caught. The lab suites (lostRecord.test.ts,
// domainCheckpoint.test.ts) prove the rest against real libvirt.
import * as assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import * as fs from "node:fs";
import type { CommandMessage, ShellOp } from "../../provider/host/diagnostics";
import { closeAllTransports, type ExecResult } from "../../provider/host/transport";
import { Virsh } from "../../provider/host/virsh";
import { setStackConfig } from "../../provider/stackConfig";
import { domainCheckpoint } from "../../provider/resources/domainCheckpoint";
import { domainSnapshot } from "../../provider/resources/domainSnapshot";
import { restorePoint } from "../../provider/resources/restorePoint";
import { snapshotRevert } from "../../provider/resources/snapshotRevert";
import { commandLog } from "../support/commandLog";

const OLD_UUID = "11111111-2222-3333-4444-555555555555";
const NEW_UUID = "99999999-8888-7777-6666-555555555555";
const DISK = "/var/lib/libvirt/images/web1.qcow2";
const DOMAIN_XML =
    `<domain type='kvm'><name>web1</name><uuid>${NEW_UUID}</uuid><memory unit='KiB'>65536</memory><devices>` +
    `<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${DISK}'/><target dev='vda' bus='virtio'/></disk>` +
    `</devices></domain>`;
/** The domain as it was when the moments were made: the kept records carry it, with the old UUID. */
const OLD_DOMAIN_XML = DOMAIN_XML.replace(NEW_UUID, OLD_UUID);

const CHECKPOINT_XML =
    `<domaincheckpoint><name>ck1</name><creationTime>1700000000</creationTime>` +
    `<disks><disk name='vda' checkpoint='bitmap' bitmap='ck1'/></disks>${OLD_DOMAIN_XML}</domaincheckpoint>`;
const SNAPSHOT_XML =
    `<domainsnapshot><name>s1</name><state>running</state><creationTime>1700000000</creationTime><memory snapshot='internal'/>` +
    `<disks><disk name='vda' snapshot='internal'/></disks>${OLD_DOMAIN_XML}</domainsnapshot>`;

/**
 * Every command preview may send, by name: virsh's read-only queries, and the host's `qemu-img info`, `stat` and `df`.
 * Anything else (checkpoint-create, snapshot-create, --redefine, a delete, resume...) is a write, and fails the test.
 */
const READ_ONLY_VIRSH = new Set([
    // virsh's echo prints its words: a session's first line, and the markers that frame each command there.
    "echo",
    "version",
    "capabilities",
    "domcapabilities",
    "dumpxml",
    "domstate",
    "dominfo",
    "domuuid",
    "domname",
    "domjobinfo",
    "snapshot-list",
    "snapshot-info",
    "snapshot-dumpxml",
    "snapshot-current",
    "snapshot-parent",
    "checkpoint-list",
    "checkpoint-info",
    "checkpoint-dumpxml",
    "checkpoint-parent",
]);
/** Options that make a read-only command change something: none of the queries above has one, but say so. */
const WRITE_OPTIONS = /^--(redefine|redefine-validate|current|metadata|children|delete|force|reset)$/;

function isRead(argv: readonly string[], stdin: string | undefined): boolean {
    // Whatever carries XML on its stdin defines or creates something.
    if (stdin !== undefined) return false;
    if (argv.some((a) => WRITE_OPTIONS.test(a))) return false;
    const [cmd, ...rest] = argv;
    if (cmd === "virsh") return READ_ONLY_VIRSH.has(rest[2] ?? "");
    if (cmd === "qemu-img") return rest[0] === "info";
    return cmd === "stat" || cmd === "df";
}

interface World {
    state: "running" | "shut off";
    /** What libvirt has a record of now (none: it lost them); a checkpoint's with its XML. */
    checkpoints: Map<string, string>;
    snapshots: string[];
    /** What the image holds, as qemu-img shows it: its internal snapshots; and the bitmaps (qemu's too, for --redefine-validate). */
    imageSnapshots: string[];
    imageBitmaps: string[];
}

/** What the provider sent, as the channel showed it, with `env LC_ALL=C` and `sudo -n` taken off. */
interface Sent {
    /** A process (exec), a long-lived one started (spawn), a command in a virsh session, a script in the host's sh. */
    via: "exec" | "spawn" | "session" | "shell";
    /** The command; for a session's, the process it stands for (`virsh -c URI` and the command). Empty for a file write. */
    argv: string[];
    /** A process's standard input; for the host shell's write-file, the text it writes. */
    stdin?: string;
    op?: ShellOp;
}

const bare = (argv: readonly string[]) => {
    let a = [...argv];
    if (a[0] === "env" && a[1] === "LC_ALL=C") a = a.slice(2);
    if (a[0] === "sudo") a = a.slice(2);
    return a;
};

function sentOf(m: CommandMessage): Sent {
    switch (m.kind) {
        case "exec":
            return { via: "exec", argv: bare(m.argv), ...(m.stdin !== undefined ? { stdin: m.stdin } : {}) };
        case "spawn":
            return { via: "spawn", argv: bare(m.argv) };
        case "session-line":
            return { via: "session", argv: [...bare(m.session), ...m.argv] };
        case "shell-line": {
            // A write-file's text is the here-document in the line: `<<'DELIMITER'`, the text, DELIMITER.
            const doc = m.op === "write-file" ? /<<'([^']+)'\n([\s\S]*?\n)\1\n/.exec(m.line)?.[2] : undefined;
            return { via: "shell", op: m.op, argv: bare(m.argv ?? []), ...(doc !== undefined ? { stdin: doc } : {}) };
        }
    }
}

/**
 * Whether what was sent changes nothing on the host. Starting a virsh shell or the host's sh changes nothing; the sh's
 * first line makes its own private folder (mktemp -d) and its `exit` lets its trap remove it: scratch of the provider's,
 * nothing of the host's. Every other line in the sh is a command (a read, or a write) or an XML file written for a
 * create (a write: only a write ever needs one).
 */
function isReadSent(c: Sent): boolean {
    switch (c.via) {
        case "exec":
            return isRead(c.argv, c.stdin);
        case "session":
            return isRead(c.argv, undefined);
        case "spawn":
            return (c.argv.length === 3 && c.argv[0] === "virsh" && c.argv[1] === "-c") || c.argv.join(" ") === "sh";
        case "shell":
            return c.op === "start" || c.op === "exit" || (c.op === "run" && isRead(c.argv, undefined));
    }
}

const describeSent = (c: Sent) =>
    c.via === "exec"
        ? c.argv.join(" ") + (c.stdin !== undefined ? " <stdin" : "")
        : c.via === "shell"
          ? `sh ${c.op}${c.argv.length ? `: ${c.argv.join(" ")}` : ""}`
          : `${c.via}: ${c.argv.join(" ")}`;

/** Split a line the way virsh's shell and sh read shellQuote's output: commands at `;`, words at blanks, '…' and \x. */
function commandsOf(line: string): string[][] {
    const commands: string[][] = [[]];
    let word: string | undefined;
    let quoted = false;
    const end = () => {
        if (word !== undefined) commands[commands.length - 1]!.push(word);
        word = undefined;
    };
    for (let i = 0; i < line.length; i++) {
        const c = line[i]!;
        if (quoted) {
            if (c === "'") quoted = false;
            else word += c;
        } else if (c === "'") {
            quoted = true;
            word ??= "";
        } else if (c === "\\") word = (word ?? "") + line[++i];
        else if (c === " " || c === "\t") end();
        else if (c === ";") {
            end();
            commands.push([]);
        } else word = (word ?? "") + c;
    }
    end();
    return commands.filter((c) => c.length > 0);
}

/** The folder the scripted host's sh writes its XML files in. */
const SH_FOLDER = "/tmp/scripted-sh";

/**
 * A scripted host under the local transport: node:child_process's spawn is replaced, so every layer of the provider
 * runs as it does for real, the transport included, and what it sends is seen on the diagnostics channel, as any
 * subscriber would see it. One domain, web1, defined again under NEW_UUID. A virsh process answers from the world; a
 * virsh shell (`virsh -c URI` alone) prints its prompt and runs the lines written to it, echo included; an `sh` runs
 * the host shell's scripts: its first line, a command, an XML file written (kept in `files`) or removed.
 */
function scriptHost(world: World) {
    const log = commandLog({ keep: true });
    const files = new Map<string, string>();
    const ok = (stdout: string): ExecResult => ({ code: 0, signal: null, stdout, stderr: "" });
    const fail = (stderr: string): ExecResult => ({ code: 1, signal: null, stdout: "", stderr: `error: ${stderr}\n` });
    const domainIs = (d: string | undefined) => d === "web1" || d === NEW_UUID;
    const answer = (argv: string[], stdin: string | undefined): ExecResult => {
        const [cmd, ...rest] = argv;
        if (cmd === "qemu-img") {
            const snapshots = world.imageSnapshots.map((name, i) => ({ id: String(i + 1), name }));
            const bitmaps = world.imageBitmaps.map((name) => ({ name, flags: ["auto"], granularity: 65536 }));
            return ok(
                JSON.stringify([{ filename: DISK, format: "qcow2", snapshots, "format-specific": { type: "qcow2", data: { bitmaps } } }]),
            );
        }
        if (cmd !== "virsh") return fail(`${cmd}: not scripted`);
        const [sub, ...args] = rest.slice(2);
        const domain = args[args.indexOf("--domain") + 1];
        if (sub === "version") return ok("Using library: libvirt 9.0.0\nRunning against daemon: 9.0.0\nRunning hypervisor: QEMU 7.2.0\n");
        if (sub === "capabilities" || sub === "domcapabilities") return ok("<capabilities/>\n");
        if (!domainIs(domain)) return fail(`failed to get domain '${domain}'`);
        switch (sub) {
            case "dumpxml":
                return ok(DOMAIN_XML);
            case "domstate":
                return ok(`${world.state}\n\n`);
            case "checkpoint-list":
                return ok([...world.checkpoints.keys()].map((n) => `${n}\n`).join("") + "\n");
            case "snapshot-list":
                return ok(world.snapshots.map((n) => `${n}\n`).join("") + "\n");
            case "checkpoint-info":
            case "checkpoint-dumpxml":
            case "checkpoint-delete": {
                const name = args[args.indexOf("--checkpointname") + 1]!;
                const xml = world.checkpoints.get(name);
                if (xml === undefined) return fail(`Domain checkpoint not found: no domain checkpoint with matching name '${name}'`);
                if (sub === "checkpoint-delete") world.checkpoints.delete(name);
                if (sub !== "checkpoint-dumpxml") return ok(sub === "checkpoint-info" ? `Name: ${name}\n` : "");
                const sized = args.includes("--size") ? xml.replace(/(<disk [^>]*?)\/>/g, "$1 size='65536'/>") : xml;
                return ok(args.includes("--no-domain") ? sized.replace(/<domain[\s>][\s\S]*<\/domain>/, "") : sized);
            }
            case "snapshot-info":
            case "snapshot-dumpxml":
            case "snapshot-delete":
                return fail(`Domain snapshot not found: no domain snapshot with matching name '${args[args.length - 1]}'`);
            case "snapshot-current":
                return fail("the domain does not have a current snapshot");
            case "checkpoint-create":
            case "snapshot-create": {
                // What a restore does: libvirt takes the record back. In a session, the XML comes in a file the sh wrote.
                const from = args[args.indexOf("--xmlfile") + 1];
                const xml = from === "/dev/stdin" ? stdin : from === undefined ? undefined : files.get(from);
                const name = /<name>([^<]+)<\/name>/.exec(xml ?? "")?.[1] ?? "?";
                if (args.includes("--redefine-validate") && !world.imageBitmaps.includes(name))
                    return fail(`operation failed: checkpoint inconsistent: missing or broken bitmap '${name}' for disk 'vda'`);
                if (sub === "checkpoint-create") world.checkpoints.set(name, xml ?? "");
                else world.snapshots.push(name);
                return ok("");
            }
        }
        return fail(`virsh ${sub}: not scripted`);
    };

    /** One line into virsh's shell: each command in turn, `echo [--err] [--xml]` as virsh prints it. */
    const virshLine = (uri: string, line: string) => {
        let stdout = "",
            stderr = "";
        for (const words of commandsOf(line)) {
            if (words[0] === "echo") {
                const flags = new Set(words.slice(1).filter((w) => w === "--err" || w === "--xml"));
                let text = words.slice(1 + flags.size).join(" ");
                if (flags.has("--xml")) text = text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
                if (flags.has("--err")) stderr += `error: ${text}\n`;
                else stdout += `${text}\n`;
                continue;
            }
            const r = answer(["virsh", "-c", uri, ...words], undefined);
            stdout += r.stdout;
            stderr += r.stderr;
        }
        return { stdout, stderr };
    };

    /** One script into the host shell (hostShell.ts's framing): its answer, and whether it was `exit`. */
    let fileCount = 0;
    const shScript = (script: string): string | "exit" => {
        if (script === "exit\n") return "exit";
        const marker = /printf '%s %s\\n' (M[0-9a-f]+x\d+)O/.exec(script)?.[1];
        assert.ok(marker, `a host shell script without its marker: ${script}`);
        if (!script.startsWith("{ ")) return `${marker}O 0\n${marker}E\n${marker}Z\n`; // the first line: the folder
        const body = script.slice(2, script.indexOf('\n} >"$d/o"'));
        let r: ExecResult;
        if (body.endsWith(" </dev/null")) r = answer(bare(commandsOf(body.slice(0, -" </dev/null".length))[0]!), undefined);
        else if (body.startsWith("rm -f -- ")) {
            files.delete(commandsOf(body)[0]![3]!);
            r = ok("");
        } else {
            const doc = /<<'([^']+)'\n([\s\S]*?\n)\1\n/.exec(body);
            assert.ok(doc && body.startsWith("n=$((n + 1));"), `a host shell script not scripted: ${body}`);
            const file = `${SH_FOLDER}/xml.${++fileCount}`;
            files.set(file, doc[2]!);
            r = ok(file);
        }
        const lines = (t: string) => (t === "" || t.endsWith("\n") ? t : `${t}\n`);
        return `${marker}O ${r.code}\n${lines(r.stdout)}${marker}E\n${lines(r.stderr)}${marker}Z\n`;
    };

    const cp = require("node:child_process") as { spawn: unknown };
    const realSpawn = cp.spawn;
    const fakeSpawn = (file: string, args: readonly string[], options: { stdio: unknown[] }) => {
        const argv = bare([file, ...args]);
        const child = new EventEmitter() as EventEmitter & Record<string, unknown>;
        const stdout = new EventEmitter(),
            stderr = new EventEmitter();
        let ended = false;
        const end = (code: number | null, signal: string | null) => {
            if (ended) return;
            ended = true;
            setImmediate(() => child.emit("close", code, signal));
        };
        const emit = (out: string, err: string) => {
            if (out) stdout.emit("data", Buffer.from(out));
            if (err) stderr.emit("data", Buffer.from(err));
        };
        Object.assign(child, { stdout, stderr, ref: () => undefined, unref: () => undefined, kill: () => end(null, "SIGKILL") });
        const stdin0 = options.stdio[0];
        if (stdin0 !== "pipe") {
            // A process run to its end: its stdin is the file the transport wrote, as an fd, or nothing.
            const stdin = typeof stdin0 === "number" ? fs.readFileSync(stdin0, "utf8") : undefined;
            setImmediate(() => {
                if (ended) return;
                const r = answer(argv, stdin);
                emit(r.stdout, r.stderr);
                end(r.code, null);
            });
            return child;
        }
        const virsh = argv.length === 3 && argv[0] === "virsh" && argv[1] === "-c";
        assert.ok(virsh || argv.join(" ") === "sh", `a long-lived process not scripted: ${argv.join(" ")}`);
        const write = (text: string) => {
            if (ended) return true;
            if (virsh) {
                const outs = text
                    .split("\n")
                    .filter(Boolean)
                    .map((l) => virshLine(argv[2]!, l));
                setImmediate(() => {
                    for (const o of outs) if (!ended) emit(o.stdout, o.stderr);
                });
            } else {
                const out = shScript(text);
                if (out === "exit") end(0, null);
                else setImmediate(() => !ended && emit(out, ""));
            }
            return true;
        };
        child.stdin = Object.assign(new EventEmitter(), { write });
        process.nextTick(() => {
            child.emit("spawn");
            if (virsh) setImmediate(() => emit("virsh # ", ""));
        });
        return child;
    };
    cp.spawn = fakeSpawn;
    const restore = () => {
        closeAllTransports();
        cp.spawn = realSpawn;
        log.stop();
    };
    const sent = () => log.commands.map(sentOf);
    const writes = (via?: Sent["via"]) =>
        sent()
            .filter((c) => !isReadSent(c) && (via === undefined || c.via === via))
            .map(describeSent);
    return { sent, writes, restore, files };
}

const lines = (sent: Sent[]) => sent.map(describeSent).join("\n");

describe("preview only reads: check and diff of a lost record (scripted host)", () => {
    let host: ReturnType<typeof scriptHost> | undefined;
    beforeEach(() => setStackConfig(() => undefined));
    afterEach(() => {
        host?.restore();
        host = undefined;
    });

    it("the allowlist tells reads from writes", () => {
        assert.equal(isRead(["virsh", "-c", "qemu:///system", "checkpoint-list", "--domain", "d", "--name"], undefined), true);
        assert.equal(isRead(["qemu-img", "info", "--output=json", "-U", "--", "/x"], undefined), true);
        for (const argv of [
            ["virsh", "-c", "qemu:///system", "checkpoint-create", "--domain", "d", "--xmlfile", "/dev/stdin", "--redefine"],
            ["virsh", "-c", "qemu:///system", "snapshot-delete", "--domain", "d", "--snapshotname", "s"],
            ["virsh", "-c", "qemu:///system", "checkpoint-dumpxml", "--domain", "d", "--checkpointname", "c", "--redefine"],
            ["qemu-img", "bitmap", "--remove", "/x", "c"],
            ["rm", "-f", "--", "/x"],
        ])
            assert.equal(isRead(argv, undefined), false, argv.join(" "));
        assert.equal(isRead(["virsh", "-c", "qemu:///system", "dumpxml", "--domain", "d"], "<x/>"), false, "anything with stdin");
        // What the shells are sent: a session's command is judged as its process would be; the sh's file writes are writes.
        const session: Sent = { via: "session", argv: ["virsh", "-c", "qemu:///system", "snapshot-delete", "--domain", "d"] };
        assert.equal(isReadSent(session), false);
        assert.equal(isReadSent({ ...session, argv: ["virsh", "-c", "qemu:///system", "domstate", "--domain", "d"] }), true);
        assert.equal(isReadSent({ via: "shell", op: "write-file", argv: [], stdin: "<x/>" }), false);
        assert.equal(isReadSent({ via: "shell", op: "remove-file", argv: ["rm", "-f", "--", "/x"] }), false);
        assert.equal(isReadSent({ via: "shell", op: "run", argv: ["df", "-B1", "--output=avail,target", "--", "/"] }), true);
        assert.equal(isReadSent({ via: "shell", op: "run", argv: ["rm", "-f", "--", "/x"] }), false);
        assert.equal(isReadSent({ via: "spawn", argv: ["virsh", "-c", "qemu:///system"] }), true);
        assert.equal(isReadSent({ via: "spawn", argv: ["virsh", "-c", "qemu:///system", "snapshot-delete"] }), false);
    });

    const checkpointInputs = { domain: "web1", checkpointName: "ck1" };
    const checkpointOlds = {
        domain: "web1",
        checkpointName: "ck1",
        deletion: "delete",
        domainName: "web1",
        domainUuid: OLD_UUID,
        creationTime: "2023-11-14T22:13:20.000Z",
        parent: null,
        disks: [{ name: "vda", checkpoint: "bitmap", bitmap: "ck1", changedBytes: 0 }],
        changedBytes: 0,
        changedBytesAt: "2023-11-14T22:13:20.000Z",
        xml: CHECKPOINT_XML,
        lineage: [],
        libvirtVersion: "9.0.0",
        adopted: false,
        restoredAt: null,
        bitmapsHealthy: true,
        bitmapProblems: [],
        declared: { domain: "web1", checkpointName: "ck1", quiesce: false, deletion: "delete", adopt: false },
    } as unknown as Parameters<typeof domainCheckpoint.diff>[1];

    for (const state of ["running", "shut off"] as const) {
        it(`DomainCheckpoint, domain ${state}: check and diff send only reads, and diff plans the update that gives it back`, async () => {
            const world: World = { state, checkpoints: new Map(), snapshots: [], imageSnapshots: [], imageBitmaps: ["ck1"] };
            host = scriptHost(world);
            const c = await domainCheckpoint.check(checkpointInputs, checkpointInputs);
            assert.deepEqual(c.failures ?? [], []);
            const d = await domainCheckpoint.diff(`${OLD_UUID}/ck1`, checkpointOlds, checkpointInputs);
            const sent = host.sent();
            assert.ok(sent.length > 0, "diff asked the host");
            assert.ok(
                sent.some((x) => x.via === "session" && x.argv[3] === "checkpoint-list"),
                `the reads went into a virsh session, where the channel sees them too:\n${lines(sent)}`,
            );
            assert.deepEqual(host.writes(), [], `only reads, but it sent:\n${lines(sent)}`);
            assert.ok(!sent.some((x) => x.argv.includes("checkpoint-create") || x.argv.includes("--redefine")), lines(sent));
            assert.deepEqual([...world.checkpoints.keys()], [], "libvirt still has no record");
            assert.deepEqual(d, { changes: true, replaces: [], deleteBeforeReplace: false }, "an update gives the record back");
        });
    }

    it("DomainCheckpoint, domain shut off and the bitmap gone from the image: diff reads, and plans a new checkpoint", async () => {
        const world: World = { state: "shut off", checkpoints: new Map(), snapshots: [], imageSnapshots: [], imageBitmaps: [] };
        host = scriptHost(world);
        const d = await domainCheckpoint.diff(`${OLD_UUID}/ck1`, checkpointOlds, checkpointInputs);
        assert.deepEqual(host.writes(), [], `only reads, but it sent:\n${lines(host.sent())}`);
        assert.deepEqual(d, { changes: true, replaces: ["checkpointName"], deleteBeforeReplace: true });
    });

    it("DomainCheckpoint: the update diff planned gives the record back, under the domain's new UUID", async () => {
        const world: World = { state: "running", checkpoints: new Map(), snapshots: [], imageSnapshots: [], imageBitmaps: ["ck1"] };
        host = scriptHost(world);
        const u = await domainCheckpoint.update(`${OLD_UUID}/ck1`, checkpointOlds, checkpointInputs);
        // In the virsh session, with its XML in a file the host's sh wrote: the file is the first the sh wrote.
        const redefines = host.sent().filter((x) => x.argv.includes("checkpoint-create"));
        assert.deepEqual(
            redefines.map((x) => `${x.via}: ${x.argv.slice(3).join(" ")}`),
            [`session: checkpoint-create --domain ${NEW_UUID} --xmlfile ${SH_FOLDER}/xml.1 --redefine --redefine-validate`],
        );
        const xml = host.sent().filter((x) => x.op === "write-file");
        assert.equal(xml.length, 1, "one XML file written");
        assert.match(xml[0]!.stdin!, new RegExp(`<uuid>${NEW_UUID}</uuid>`));
        assert.deepEqual([...world.checkpoints.keys()], ["ck1"]);
        const outs = u.outs as Record<string, unknown>;
        assert.equal(outs.domainUuid, NEW_UUID);
        assert.ok(Date.parse(outs.restoredAt as string) > 0, "restoredAt records it");
        assert.equal(outs.bitmapsHealthy, true);
    });

    it("DomainCheckpoint, domain running and the bitmap gone: only libvirt can tell, so the update finds out, and says so", async () => {
        const world: World = { state: "running", checkpoints: new Map(), snapshots: [], imageSnapshots: [], imageBitmaps: [] };
        host = scriptHost(world);
        const d = await domainCheckpoint.diff(`${OLD_UUID}/ck1`, checkpointOlds, checkpointInputs);
        assert.deepEqual(host.writes(), [], `only reads, but it sent:\n${lines(host.sent())}`);
        assert.deepEqual(d, { changes: true, replaces: [], deleteBeforeReplace: false });
        const failure = await domainCheckpoint.update(`${OLD_UUID}/ck1`, checkpointOlds, checkpointInputs).then(
            () => assert.fail("the update gave back a record whose bitmap is gone"),
            (e: Error & { id?: string; properties?: Record<string, unknown>; reasons?: string[] }) => e,
        );
        assert.match(
            failure.message,
            /^checkpoint 'ck1' of domain 'web1' is gone and can't be restored \(.*checkpoint inconsistent: .*\)\. Nothing was changed\. The next pulumi up creates it again\.$/,
        );
        assert.deepEqual([...world.checkpoints.keys()], [], "nothing made up");
        // An init failure: the engine keeps these outputs, so the next diff plans a new checkpoint instead of this update.
        assert.equal(failure.id, `${OLD_UUID}/ck1`);
        assert.deepEqual(failure.reasons, [failure.message]);
        const kept = failure.properties!;
        assert.equal(kept.recordLost, true);
        assert.equal(kept.bitmapsHealthy, false);
        assert.equal(kept.domainUuid, NEW_UUID);
        const again = await domainCheckpoint.diff(`${OLD_UUID}/ck1`, kept as unknown as typeof checkpointOlds, checkpointInputs);
        assert.deepEqual(again, { changes: true, replaces: ["checkpointName"], deleteBeforeReplace: true });
        const writes = host.writes("session");
        assert.equal(writes.length, 1, `only the update's refused redefine: ${writes.join("\n")}`);
        assert.match(writes[0]!, /checkpoint-create .*--redefine --redefine-validate/);
    });

    it("DomainCheckpoint: delete of a lost record gives it back first, so libvirt removes the bitmaps too", async () => {
        const world: World = { state: "running", checkpoints: new Map(), snapshots: [], imageSnapshots: [], imageBitmaps: ["ck1"] };
        host = scriptHost(world);
        await domainCheckpoint.delete(`${OLD_UUID}/ck1`, checkpointOlds);
        // The virsh session's writes in order; the sh's (the XML file, then its removal, which nobody waits for) beside them.
        assert.deepEqual(host.writes("session"), [
            `session: virsh -c qemu:///system checkpoint-create --domain ${NEW_UUID} --xmlfile ${SH_FOLDER}/xml.1 ` +
                `--redefine --redefine-validate`,
            `session: virsh -c qemu:///system checkpoint-delete --domain ${NEW_UUID} --checkpointname ck1`,
        ]);
        assert.deepEqual(host.writes("shell"), ["sh write-file", `sh remove-file: rm -f -- ${SH_FOLDER}/xml.1`]);
        assert.deepEqual(host.writes().length, 4, `nothing else: ${host.writes().join("\n")}`);
        assert.deepEqual([...world.checkpoints.keys()], []);
    });

    for (const state of ["running", "shut off"] as const) {
        it(`DomainCheckpoint, domain ${state}: refresh (read) only reads, and keeps the lost record with recordLost and the new UUID`, async () => {
            const world: World = { state, checkpoints: new Map(), snapshots: [], imageSnapshots: [], imageBitmaps: ["ck1"] };
            host = scriptHost(world);
            const r = await domainCheckpoint.read(`${OLD_UUID}/ck1`, checkpointOlds);
            assert.deepEqual(host.writes(), [], `only reads, but it sent:\n${lines(host.sent())}`);
            assert.deepEqual([...world.checkpoints.keys()], [], "libvirt still has no record");
            assert.equal(r.id, `${OLD_UUID}/ck1`, "kept: the id stays, so nothing is replaced");
            const props = r.props as Record<string, unknown>;
            assert.equal(props.recordLost, true);
            assert.equal(props.domainUuid, NEW_UUID);
            assert.equal(props.xml, CHECKPOINT_XML, "the kept record stays, for the update that gives it back");
            assert.equal(props.restoredAt, null);
            // The next diff plans that update.
            const d = await domainCheckpoint.diff(r.id!, props as unknown as typeof checkpointOlds, checkpointInputs);
            assert.deepEqual(d, { changes: true, replaces: [], deleteBeforeReplace: false });
            assert.deepEqual(host.writes(), [], `only reads, but it sent:\n${lines(host.sent())}`);
        });
    }

    it("DomainCheckpoint, domain shut off and the bitmap gone from the image: refresh drops it, and only reads", async () => {
        const world: World = { state: "shut off", checkpoints: new Map(), snapshots: [], imageSnapshots: [], imageBitmaps: [] };
        host = scriptHost(world);
        const r = await domainCheckpoint.read(`${OLD_UUID}/ck1`, checkpointOlds);
        assert.deepEqual(host.writes(), [], `only reads, but it sent:\n${lines(host.sent())}`);
        assert.deepEqual(r, { id: "", props: {} });
    });

    it("a snapshot or domain named by another resource's output may not exist yet at preview: check lets it be; a literal is refused", async () => {
        const world: World = { state: "running", checkpoints: new Map(), snapshots: [], imageSnapshots: [], imageBitmaps: [] };
        host = scriptHost(world);
        const revert = { domain: "web1", snapshot: "s9" };
        const refused = await snapshotRevert.check({}, revert);
        assert.equal(refused.failures?.length, 1);
        assert.equal(refused.failures![0]!.property, "snapshot");
        assert.match(refused.failures![0]!.reason, /^domain 'web1' has no snapshot 's9' \(it has no snapshots\)\. /);
        assert.deepEqual(Object.keys(refused.failures![0]!).sort(), ["property", "reason"], "the engine gets property and reason only");
        assert.deepEqual((await snapshotRevert.check({}, { ...revert, __fromResources: ["snapshot"] })).failures, []);
        // Only the absence is let be, and only of the input that came from another resource.
        assert.equal((await snapshotRevert.check({}, { ...revert, __fromResources: ["domain"] })).failures?.length, 1);
        const snapshot = { domain: "web9", snapshotName: "s1" };
        assert.deepEqual((await domainSnapshot.check({}, snapshot)).failures, [
            { property: "domain", reason: "no domain 'web9' on local virsh (qemu:///system)" },
        ]);
        assert.deepEqual((await domainSnapshot.check({}, { ...snapshot, __fromResources: ["domain"] })).failures, []);
        assert.deepEqual(host.writes(), [], `only reads, but it sent:\n${lines(host.sent())}`);
    });

    const snapshotInputs = { domain: "web1", snapshotName: "s1" };
    const snapshotOlds = {
        domain: "web1",
        snapshotName: "s1",
        deletion: "delete",
        domainName: "web1",
        domainUuid: OLD_UUID,
        creationTime: "2023-11-14T22:13:20.000Z",
        state: "running",
        parent: null,
        isCurrent: true,
        kind: "internal",
        memory: "internal",
        diskFiles: {},
        libvirtVersion: "9.0.0",
        adopted: false,
        xml: SNAPSHOT_XML,
        recordLost: false,
        restoredAt: null,
        declared: { domain: "web1", snapshotName: "s1", kind: "internal", quiesce: false, atomic: true, live: false, halt: false },
    } as unknown as Parameters<typeof domainSnapshot.diff>[1];

    it("DomainSnapshot: check and diff send only reads, and diff plans an update that gives the record back", async () => {
        const world: World = { state: "running", checkpoints: new Map(), snapshots: [], imageSnapshots: ["s1"], imageBitmaps: [] };
        host = scriptHost(world);
        const c = await domainSnapshot.check(snapshotInputs, snapshotInputs);
        assert.deepEqual(c.failures ?? [], []);
        const d = await domainSnapshot.diff(`${OLD_UUID}/s1`, snapshotOlds, snapshotInputs);
        assert.ok(
            host.sent().some((x) => x.argv[0] === "qemu-img"),
            "diff looked for the data in the image",
        );
        assert.deepEqual(host.writes(), [], `only reads, but it sent:\n${lines(host.sent())}`);
        assert.deepEqual(world.snapshots, [], "libvirt still has no record");
        assert.deepEqual(d, { changes: true, replaces: [], deleteBeforeReplace: false });
    });

    const restorePointInputs = { domains: ["web1"], snapshotName: "s1" };
    const restorePointOlds = {
        domains: ["web1"],
        snapshotName: "s1",
        consistency: "simultaneous",
        deletion: "delete",
        pausedMilliseconds: 0,
        snapshots: [
            {
                host: "local virsh (qemu:///system)",
                domain: "web1",
                domainName: "web1",
                domainUuid: OLD_UUID,
                snapshotName: "s1",
                creationTime: "2023-11-14T22:13:20.000Z",
                state: "running",
                kind: "internal",
                memory: "internal",
                xml: SNAPSHOT_XML,
            },
        ],
        declared: { domains: ["web1"], snapshotName: "s1", kind: "internal", consistency: "simultaneous", deletion: "delete" },
    } as unknown as Parameters<typeof restorePoint.diff>[1];

    it("RestorePoint: check and diff send only reads, and diff plans an update that gives the member's record back", async () => {
        const world: World = { state: "running", checkpoints: new Map(), snapshots: [], imageSnapshots: ["s1"], imageBitmaps: [] };
        host = scriptHost(world);
        const c = await restorePoint.check(restorePointInputs, restorePointInputs);
        assert.deepEqual(c.failures ?? [], []);
        const d = await restorePoint.diff("rp", restorePointOlds, restorePointInputs);
        assert.ok(
            host.sent().some((x) => x.argv[0] === "qemu-img"),
            "diff looked for the data in the image",
        );
        assert.deepEqual(host.writes(), [], `only reads, but it sent:\n${lines(host.sent())}`);
        assert.deepEqual(world.snapshots, [], "libvirt still has no record");
        assert.deepEqual(d, { changes: true, replaces: [], deleteBeforeReplace: false });
    });

    /**
     * Writes planted in a diff, one down each way to the host: a create with its XML (the sh writes the file, the virsh
     * session runs it, the sh removes the file), a delete (in the session), a command of the host's (a process), and a
     * write sent as if it only read (in the sh). Planted by wrapping Virsh.query, which every diff calls.
     */
    async function plantedIn(diff: () => Promise<unknown>): Promise<void> {
        const query = Virsh.prototype.query;
        let planted = false;
        Virsh.prototype.query = async function (this: Virsh, args: readonly string[]) {
            if (!planted) {
                planted = true;
                const xml = CHECKPOINT_XML.replace(OLD_UUID, NEW_UUID);
                await this.run(["checkpoint-create", "--domain", NEW_UUID, "--xmlfile", "/dev/stdin", "--redefine"], { stdin: xml });
                await this.run(["snapshot-delete", "--domain", NEW_UUID, "--snapshotname", "s9"]).catch(() => undefined);
                await this.host(["qemu-img", "bitmap", "--remove", "--", DISK, "ck1"]);
                await this.host(["rm", "-f", "--", "/tmp/x"], { asLoginUser: true, readOnly: true });
            }
            return query.call(this, args);
        };
        try {
            await diff();
        } finally {
            Virsh.prototype.query = query;
        }
        assert.ok(planted, "the diff asked a query, so the writes were sent");
    }

    const plantedWrites = {
        session: [
            `session: virsh -c qemu:///system checkpoint-create --domain ${NEW_UUID} --xmlfile ${SH_FOLDER}/xml.1 --redefine`,
            `session: virsh -c qemu:///system snapshot-delete --domain ${NEW_UUID} --snapshotname s9`,
        ],
        exec: [`qemu-img bitmap --remove -- ${DISK} ck1`],
        shell: ["sh write-file", `sh remove-file: rm -f -- ${SH_FOLDER}/xml.1`, "sh run: rm -f -- /tmp/x"],
    };

    const planted: Array<[string, World, () => Promise<unknown>]> = [
        [
            "DomainCheckpoint",
            { state: "running", checkpoints: new Map(), snapshots: [], imageSnapshots: [], imageBitmaps: ["ck1"] },
            () => domainCheckpoint.diff(`${OLD_UUID}/ck1`, checkpointOlds, checkpointInputs),
        ],
        [
            "DomainSnapshot",
            { state: "running", checkpoints: new Map(), snapshots: [], imageSnapshots: ["s1"], imageBitmaps: [] },
            () => domainSnapshot.diff(`${OLD_UUID}/s1`, snapshotOlds, snapshotInputs),
        ],
        [
            "RestorePoint",
            { state: "running", checkpoints: new Map(), snapshots: [], imageSnapshots: ["s1"], imageBitmaps: [] },
            () => restorePoint.diff("rp", restorePointOlds, restorePointInputs),
        ],
    ];
    for (const [resource, world, diff] of planted) {
        it(`${resource}: writes planted in its diff are caught, in a virsh session, in the sh and as a process`, async () => {
            const h = (host = scriptHost(world));
            await plantedIn(diff);
            assert.deepEqual(h.writes("session"), plantedWrites.session);
            assert.deepEqual(h.writes("exec"), plantedWrites.exec);
            assert.deepEqual(h.writes("shell"), plantedWrites.shell);
            assert.equal(h.writes().length, 6, h.writes().join("\n"));
            assert.throws(() => assert.deepEqual(h.writes(), []), "the check every preview test makes fails");
        });
    }
});
