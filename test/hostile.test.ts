// Hostile input through the engine path. Every string of the corpus
// (test/support/hostile-corpus.ts) goes into every string input of every
// resource: the SDK serializes the real provider, @pulumi/pulumi's
// dynamic-provider server runs Check, and when Check accepts, Create and
// Delete run against real lab domains. Each one must be refused at check by a
// failure that names the input, or used literally: the snapshot, checkpoint,
// description or file that libvirt reports back is exactly the string given.
// Afterwards no canary file exists, our domains and the lab's hold nothing
// extra, and a virsh wrapper's log shows that virsh only ever got the options
// the provider meant to give it.
import * as assert from "node:assert/strict";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createRequire } from "node:module";
import { XMLParser } from "fast-xml-parser";
import { DomainCheckpointProvider, DomainSnapshotProvider, RestorePointProvider, SnapshotRevertProvider } from "pulumi-libvirt-snapshots";
import { EngineHarness, PACKAGE_ROOT, dynamicType, type Props, type ResourceState } from "./harness/engine";
import { disposeAllTestDomains, domainXml, loadLab, makeDomain, qemuImgInfo, qemuIoRead, qemuIoWrite, run, sleep, virshLocal, virshOk as virshOnce, type TestDomain } from "./support/lab";
import { RELATIVE_CANARY_PREFIX, hostileCorpus, type HostileEntry } from "./support/hostile-corpus";

const lab = loadLab();
const MODULE = "libvirt-snapshots";
const TYPE = {
    snapshot: dynamicType(MODULE, "DomainSnapshot"),
    restorePoint: dynamicType(MODULE, "RestorePoint"),
    checkpoint: dynamicType(MODULE, "DomainCheckpoint"),
    revert: dynamicType(MODULE, "SnapshotRevert"),
};
type Provider = typeof DomainSnapshotProvider;

// What a string is once it crossed gRPC, encoded by the very protobuf library the
// SDK uses: google-protobuf drops a high surrogate that has no partner, and passes
// a lone low surrogate through (as CESU-8), which Node later writes as U+FFFD.
const structpb = createRequire(require.resolve("@pulumi/pulumi/package.json"))("google-protobuf/google/protobuf/struct_pb") as typeof import("google-protobuf/google/protobuf/struct_pb");
const wire = (s: string): string => structpb.Struct.deserializeBinary(structpb.Struct.fromJavaScript({ v: s }).serializeBinary()).toJavaScript().v as string;

const show = (s: string): string => JSON.stringify(s.length > 60 ? `${s.slice(0, 57)}...` : s);

const sshConnection = () => ({
    host: lab.host, port: lab.port, user: lab.user,
    privateKey: fs.readFileSync(lab.privateKeyPath, "utf8"), hostKey: lab.hostKey,
});

// ---- small helpers -----------------------------------------------------------------

function limiter(n: number) {
    let active = 0;
    const waiting: Array<() => void> = [];
    return async <T>(fn: () => Promise<T>): Promise<T> => {
        while (active >= n) await new Promise<void>((r) => waiting.push(r));
        active++;
        try { return await fn(); } finally { active--; waiting.shift()?.(); }
    };
}

const lines = (out: string) => out.split("\n").filter((l) => l !== "");

/** The suite's own virsh reads, patient with a libvirtd that another test run is restarting. */
async function virshOk(args: readonly string[]): Promise<string> {
    for (let attempt = 0; ; attempt++) {
        try { return await virshOnce(args); } catch (e) {
            if (attempt >= 20 || !/failed to connect to the hypervisor/.test((e as Error).message)) throw e;
            await sleep(500);
        }
    }
}

async function snapshotList(domain: string): Promise<string[]> {
    return lines(await virshOk(["snapshot-list", "--domain", domain, "--name"])).sort();
}
async function checkpointList(domain: string): Promise<string[]> {
    return lines(await virshOk(["checkpoint-list", "--domain", domain, "--name"])).sort();
}
async function qcow2Snapshots(disk: string): Promise<string[]> {
    return ((await qemuImgInfo(disk)).snapshots ?? []).map((s) => s.name).sort();
}

const ordered = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: "", preserveOrder: true, parseTagValue: false, parseAttributeValue: false, trimValues: false });
type XNode = Record<string, unknown>;
const tagOf = (n: XNode) => Object.keys(n).find((k) => k !== ":@")!;
const attrsOf = (n: XNode) => (n[":@"] ?? {}) as Record<string, string>;
const kids = (n: XNode) => (n[tagOf(n)] as XNode[]) ?? [];
const elements = (n: XNode) => kids(n).filter((k) => tagOf(k) !== "#text");
const textOf = (n: XNode) => kids(n).filter((k) => tagOf(k) === "#text").map((k) => String(k["#text"])).join("");

function rootOf(xml: string, tag: string): XNode {
    const doc = (ordered.parse(xml) as XNode[]).filter((n) => tagOf(n) !== "#text" && tagOf(n) !== "?xml");
    assert.equal(doc.length, 1, "one root element");
    assert.equal(tagOf(doc[0]!), tag);
    return doc[0]!;
}

/** Problems with a structure: stray text, unexpected elements or attributes. */
function structural(node: XNode, where: string, allowed: Record<string, [number, number]>, attrs: string[]): string[] {
    const out: string[] = [];
    for (const k of kids(node)) if (tagOf(k) === "#text" && String(k["#text"]).trim() !== "") out.push(`${where}: stray text ${show(String(k["#text"]))}`);
    const counts = new Map<string, number>();
    for (const e of elements(node)) counts.set(tagOf(e), (counts.get(tagOf(e)) ?? 0) + 1);
    for (const [tag, n] of counts) if (!(tag in allowed)) out.push(`${where}: unexpected element <${tag}> (x${n})`);
    for (const [tag, [min, max]] of Object.entries(allowed)) {
        const n = counts.get(tag) ?? 0;
        if (n < min || n > max) out.push(`${where}: <${tag}> appears ${n} times, expected ${min === max ? min : `${min}..${max}`}`);
    }
    for (const a of Object.keys(attrsOf(node))) if (!attrs.includes(a)) out.push(`${where}: unexpected attribute ${a}=${show(attrsOf(node)[a]!)}`);
    return out;
}

interface SnapshotShape {
    name: string;
    description?: string;
    domainName: string;
    memory: { snapshot: string; file?: string };
    disks: Array<{ name: string; snapshot: string; file?: string }>;
}

/** The snapshot XML libvirt reports has exactly the declared structure, and the declared strings, literally. */
function snapshotShapeProblems(xml: string, want: SnapshotShape): string[] {
    const root = rootOf(xml, "domainsnapshot");
    const out = structural(root, "<domainsnapshot>", {
        name: [1, 1], description: want.description === undefined ? [0, 0] : [1, 1], state: [1, 1], parent: [0, 1], creationTime: [1, 1],
        memory: [1, 1], disks: [1, 1], domain: [1, 1], active: [0, 1], cookie: [0, 1], inactiveDomain: [0, 1],
    }, []);
    const el = (tag: string) => elements(root).find((e) => tagOf(e) === tag);
    if (el("name") && textOf(el("name")!) !== want.name) out.push(`<name> is ${show(textOf(el("name")!))}, declared ${show(want.name)}`);
    if (want.description !== undefined && el("description") && textOf(el("description")!) !== want.description) {
        out.push(`<description> is ${show(textOf(el("description")!))}, declared ${show(want.description)}`);
    }
    const memory = el("memory");
    if (memory) {
        out.push(...structural(memory, "<memory>", {}, ["snapshot", "file"]));
        if (attrsOf(memory).snapshot !== want.memory.snapshot) out.push(`<memory snapshot=${show(attrsOf(memory).snapshot ?? "")}>, declared ${want.memory.snapshot}`);
        if (attrsOf(memory).file !== want.memory.file) out.push(`<memory file=${show(attrsOf(memory).file ?? "(none)")}>, declared ${show(want.memory.file ?? "(none)")}`);
    }
    const disks = el("disks");
    if (disks) {
        out.push(...structural(disks, "<disks>", { disk: [want.disks.length, want.disks.length] }, []));
        for (const d of elements(disks)) {
            const a = attrsOf(d);
            const w = want.disks.find((x) => x.name === a.name);
            if (!w) { out.push(`<disk name=${show(a.name ?? "")}> was not declared`); continue; }
            out.push(...structural(d, `<disk ${a.name}>`, { driver: [0, 1], source: [0, 1] }, ["name", "snapshot", "type"]));
            if (a.snapshot !== w.snapshot) out.push(`<disk ${a.name}> snapshot=${a.snapshot}, declared ${w.snapshot}`);
            const source = elements(d).find((e) => tagOf(e) === "source");
            if (w.file !== undefined && attrsOf(source ?? {}).file !== w.file) out.push(`<disk ${a.name}> source file ${show(attrsOf(source ?? {}).file ?? "(none)")}, declared ${show(w.file)}`);
        }
    }
    const domain = el("domain");
    const domainName = domain && elements(domain).find((e) => tagOf(e) === "name");
    if (!domainName || textOf(domainName) !== want.domainName) out.push(`<domain><name> is ${show(domainName ? textOf(domainName) : "(none)")}, expected ${show(want.domainName)}`);
    return out;
}

function checkpointShapeProblems(xml: string, want: { name: string; description?: string; bitmap: string }): string[] {
    const root = rootOf(xml, "domaincheckpoint");
    const out = structural(root, "<domaincheckpoint>", {
        name: [1, 1], description: want.description === undefined ? [0, 0] : [1, 1], parent: [0, 1], creationTime: [1, 1], disks: [1, 1], domain: [0, 0],
    }, []);
    const el = (tag: string) => elements(root).find((e) => tagOf(e) === tag);
    if (el("name") && textOf(el("name")!) !== want.name) out.push(`<name> is ${show(textOf(el("name")!))}, declared ${show(want.name)}`);
    if (want.description !== undefined && el("description") && textOf(el("description")!) !== want.description) {
        out.push(`<description> is ${show(textOf(el("description")!))}, declared ${show(want.description)}`);
    }
    const disks = el("disks");
    if (disks) {
        out.push(...structural(disks, "<disks>", { disk: [1, 1] }, []));
        const d = elements(disks)[0];
        if (d) {
            out.push(...structural(d, "<disk>", {}, ["name", "checkpoint", "bitmap", "size"]));
            const a = attrsOf(d);
            if (a.name !== "vda" || a.checkpoint !== "bitmap" || a.bitmap !== want.bitmap) out.push(`<disk> is ${JSON.stringify(a)}, expected vda with bitmap ${show(want.bitmap)}`);
        }
    }
    return out;
}

/** The first disk's source file, as the domain XML says now. */
async function diskSource(domain: string, inactive: boolean): Promise<string> {
    const root = rootOf(await virshOk(["dumpxml", "--domain", domain, ...(inactive ? ["--inactive"] : [])]), "domain");
    const devices = elements(root).find((e) => tagOf(e) === "devices")!;
    const disk = elements(devices).find((e) => tagOf(e) === "disk")!;
    return attrsOf(elements(disk).find((e) => tagOf(e) === "source")!).file!;
}

function xmlEscape(s: string): string {
    return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/'/g, "&apos;").replace(/"/g, "&quot;");
}

// ---- process identity, for leftovers of a crashed run --------------------------------------

function procStart(pid: number): string | undefined {
    try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
        const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        return f[0] === "Z" || f[0] === "X" ? undefined : f[19];
    } catch { return undefined; }
}
const ownerTag = () => `pid=${process.pid} start=${procStart(process.pid) ?? "0"}`;
function ownerAlive(tag: string): boolean {
    const m = /pid=(\d+) start=(\d+)/.exec(tag);
    return !!m && procStart(Number(m[1])) === m[2];
}

/**
 * Domain names are global on the host, so two runs of this suite (two checkouts,
 * two sessions) can't both define the hostile-named domains: the second waits.
 */
const RUN_LOCK = path.join(os.tmpdir(), "pulumi-libvirt-hostile.lock");

async function takeRunLock(maxWaitMs: number): Promise<void> {
    const deadline = Date.now() + maxWaitMs;
    for (;;) {
        try {
            fs.writeFileSync(RUN_LOCK, ownerTag() + "\n", { flag: "wx" });
            return;
        } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
            let holder = "";
            try { holder = fs.readFileSync(RUN_LOCK, "utf8"); } catch { continue; }
            if (!ownerAlive(holder)) { fs.rmSync(RUN_LOCK, { force: true }); continue; }
            if (Date.now() > deadline) throw new Error(`another run of the hostile suite (${holder.trim()}) holds ${RUN_LOCK}`);
            await sleep(2000);
        }
    }
}

function dropRunLock(): void {
    try { if (fs.readFileSync(RUN_LOCK, "utf8").trim() === ownerTag()) fs.rmSync(RUN_LOCK, { force: true }); } catch { /* not ours or gone */ }
}

// Hostile-named domains get their own title, so the lab's cleanup (which goes by
// name) never hands one of these names to virsh.
const HOSTILE_TITLE = "pulumi-libvirt-hostile-tmp";

interface HostileDomain { name: string; uuid: string; dir: string; disk: string; }

async function defineHostileDomain(value: string): Promise<HostileDomain | undefined> {
    const name = wire(value);
    if (name === "" || name.includes("\u0000")) return undefined;
    const dir = path.join(lab.tmpDiskDir, `labtmp-hostiledom-${crypto.randomBytes(4).toString("hex")}`);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, "owner"), ownerTag() + "\n");
    const disk = path.join(dir, "disk.qcow2");
    const cleanup = () => fs.rmSync(dir, { recursive: true, force: true });
    const made = await run("/usr/bin/qemu-img", ["create", "-q", "-f", "qcow2", disk, "16M"]);
    if (made.code !== 0) { cleanup(); throw new Error(`qemu-img create: ${made.stderr}`); }
    const uuid = crypto.randomUUID();
    // The first raw "</name>" closes the element: the name itself is escaped.
    const xml = domainXml({ name, title: `${HOSTILE_TITLE} ${ownerTag()}`, virtType: lab.virtType, disk, format: "qcow2" })
        .replace("</name>", `</name>\n  <uuid>${uuid}</uuid>`);
    const file = path.join(dir, "domain.xml");
    fs.writeFileSync(file, xml);
    const r = await virshLocal(["define", "--file", file]);
    if (r.code !== 0) { cleanup(); return undefined; } // libvirt won't take this name: the provider must refuse it too
    const got = textOf(elements(rootOf(await virshOk(["dumpxml", "--domain", uuid]), "domain")).find((e) => tagOf(e) === "name")!);
    if (got !== name) { await undefineByUuid(uuid); cleanup(); return undefined; }
    return { name, uuid, dir, disk };
}

async function undefineByUuid(uuid: string): Promise<void> {
    await virshLocal(["destroy", "--domain", uuid]);
    await virshLocal(["undefine", "--domain", uuid, "--snapshots-metadata", "--checkpoints-metadata"]);
}

/** Hostile-named domains of runs that died before their cleanup. */
async function removeStaleHostileDomains(): Promise<void> {
    for (const uuid of lines(await virshOk(["list", "--all", "--uuid"]))) {
        const r = await virshLocal(["dumpxml", "--domain", uuid.trim()]);
        if (r.code !== 0) continue;
        const root = rootOf(r.stdout, "domain");
        const title = textOf(elements(root).find((e) => tagOf(e) === "title") ?? {});
        if (!title.startsWith(`${HOSTILE_TITLE} `) || ownerAlive(title)) continue;
        await undefineByUuid(uuid.trim());
    }
    for (const name of fs.existsSync(lab.tmpDiskDir) ? fs.readdirSync(lab.tmpDiskDir) : []) {
        if (!name.startsWith("labtmp-hostiledom-")) continue;
        let tag = "";
        try { tag = fs.readFileSync(path.join(lab.tmpDiskDir, name, "owner"), "utf8"); } catch { /* none */ }
        if (!ownerAlive(tag)) fs.rmSync(path.join(lab.tmpDiskDir, name), { recursive: true, force: true });
    }
}

// ---- the virsh wrapper: every argument vector the provider gives virsh (local transport) ----------

const VIRSH_WRAPPER = `#!/bin/sh
# Logs its argument vector (NUL-separated, count first), then runs the real virsh.
# Without a command (only -c URI) virsh is a shell reading commands from stdin:
# those lines are logged too.
exec 3>>"$HOSTILE_VIRSH_LOG_DIR/$$"
printf '%s\\0' "$#" "$@" >&3
exec 3>&-
if [ "$#" -le 2 ]; then
  tee -a "$HOSTILE_VIRSH_LOG_DIR/$$.stdin" | /usr/bin/virsh "$@"
  exit $?
fi
exec /usr/bin/virsh "$@"
`;

const VALUE_OPTIONS = new Set(["--domain", "--snapshotname", "--checkpointname", "--xmlfile"]);
/** The flags each command may get in this suite (deletion is always "delete", so never --metadata). */
const FLAGS: Record<string, string[]> = {
    "version": [], "domcapabilities": [], "dumpxml": ["--inactive", "--security-info"], "domstate": ["--reason"],
    "snapshot-create": ["--atomic", "--disk-only", "--redefine", "--current"], "snapshot-delete": [],
    "snapshot-dumpxml": ["--security-info"], "snapshot-info": [], "snapshot-list": ["--name"], "snapshot-revert": [],
    "checkpoint-create": ["--redefine", "--redefine-validate"], "checkpoint-delete": [], "checkpoint-dumpxml": ["--size", "--no-domain"],
    "checkpoint-info": [], "checkpoint-list": ["--name"], "suspend": [], "resume": [], "domid": [], "domjobinfo": [],
};

/** Every command virsh ran: argument vectors of processes, and the commands of its shell sessions. */
function readVirshLog(dir: string): { processes: string[][]; sessions: string[][]; sessionLines: number } {
    const processes = readArgvLog(dir).filter((a) => a.length > 2);
    const sessions: string[][] = [];
    let sessionLines = 0;
    for (const f of fs.readdirSync(dir).filter((x) => x.endsWith(".stdin"))) {
        for (const line of fs.readFileSync(path.join(dir, f), "utf8").split("\n")) {
            if (line === "") continue;
            sessionLines++;
            sessions.push(...virshShellCommands(line));
        }
    }
    return { processes, sessions, sessionLines };
}

/**
 * A line of virsh's shell split into commands the way virsh's tokenizer does it
 * (libvirt 9.0 vshCommandStringGetArg): blanks separate arguments, an unquoted
 * ';' separates commands, '...' is literal, "..." and a backslash escape.
 */
function virshShellCommands(line: string): string[][] {
    const commands: string[][] = [];
    let cmd: string[] = [];
    let i = 0;
    while (i < line.length) {
        while (line[i] === " " || line[i] === "\t") i++;
        if (i >= line.length) break;
        if (line[i] === ";") { commands.push(cmd); cmd = []; i++; continue; }
        if (line[i] === "#") break;
        let tok = "", single = false, double = false;
        while (i < line.length) {
            const c = line[i]!;
            if (!single && !double && (c === " " || c === "\t" || c === ";")) break;
            if (!double && c === "'") { single = !single; i++; continue; }
            if (!single && c === "\\") { tok += line[i + 1] ?? ""; i += 2; continue; }
            if (!single && c === "\"") { double = !double; i++; continue; }
            tok += c; i++;
        }
        cmd.push(tok);
    }
    if (cmd.length) commands.push(cmd);
    // The session's own handshake (every printable character, echoed) and markers: echo [--err] --xml '<S|E|P><nonce>x<n><'
    return commands.filter((c) => !(c[0] === "echo" && (/^(--err --xml|--xml) [SEP][0-9a-f]+x\d+<$/.test(c.slice(1).join(" ")) || (c.length === 2 && c[1] === PRINTABLE))));
}

function readArgvLog(dir: string): string[][] {
    const out: string[][] = [];
    for (const f of fs.readdirSync(dir).filter((x) => !x.endsWith(".stdin"))) {
        const parts = fs.readFileSync(path.join(dir, f), "utf8").split("\0");
        parts.pop(); // after the last NUL
        for (let i = 0; i < parts.length;) {
            const n = Number(parts[i]);
            out.push(parts.slice(i + 1, i + 1 + n));
            i += 1 + n;
        }
    }
    return out;
}

const PRINTABLE = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).join("");
const SESSION_READ_ONLY = new Set(["dumpxml", "domstate", "dominfo", "domuuid", "domname", "domid", "domjobinfo", "version", "domcapabilities", "capabilities",
    "snapshot-dumpxml", "snapshot-info", "snapshot-list", "snapshot-parent", "checkpoint-dumpxml", "checkpoint-info", "checkpoint-list", "checkpoint-parent"]);

function argvProblems(argv: string[], declared: { uris: Set<string>; domains: Set<string>; names: Set<string> }): string[] {
    const where = `virsh ${argv.map((a) => show(a)).join(" ")}`;
    if (argv[0] !== "-c" || !declared.uris.has(argv[1] ?? "")) return [`${where}: does not start with -c and a declared URI`];
    const cmd = argv[2] ?? "";
    const flags = FLAGS[cmd];
    if (!flags) return [`${where}: command ${show(cmd)} is not one the provider runs`];
    const out: string[] = [];
    for (let i = 3; i < argv.length; i++) {
        const a = argv[i]!;
        if (VALUE_OPTIONS.has(a)) {
            const v = argv[++i];
            if (v === undefined) { out.push(`${where}: ${a} without a value`); continue; }
            if (v.startsWith("-")) out.push(`${where}: the value of ${a} starts with '-'`);
            const ok = a === "--xmlfile" ? v === "/dev/stdin" : a === "--domain" ? declared.domains.has(v) : declared.names.has(v);
            if (!ok) out.push(`${where}: ${a} ${show(v)} was never declared`);
        } else if (!flags.includes(a)) {
            out.push(`${where}: ${show(a)} is not an option ${cmd} is meant to get here`);
        }
    }
    return out;
}

// ---- specs: one per string input -------------------------------------------------------------

interface Lane { index: number; doms: TestDomain[]; }

interface Spec {
    /** e.g. "DomainSnapshot.snapshotName (ssh)" */
    input: string;
    type: string;
    provider: Provider;
    /** The properties a refusal may name. */
    properties: string[];
    /** Failures found on the host that name the connection; their reason must quote the value. */
    hostProperties?: string[];
    lanes: number | TestDomain[][];
    /** The entries this spec takes (default: all). */
    only?(e: HostileEntry): boolean;
    build(e: HostileEntry, lane: Lane): Props;
    /** Create from the checked inputs, prove literal use, delete, prove it is gone. Absent: acceptance is a problem. */
    use?(e: HostileEntry, lane: Lane, checked: Props, urn: string): Promise<void>;
}

interface Tally { tried: number; refused: number; refusedAtHost: number; literal: number; failed: number; }

describe("hostile input (engine path, real lab)", function () {
    this.timeout(600_000);
    let engine: EngineHarness;
    let corpus: HostileEntry[];
    let canaryDir: string, logDir: string, wrapDir: string;
    const token = crypto.randomBytes(4).toString("hex");
    const doms: TestDomain[] = [];
    let victim: TestDomain;
    const hostileDomains = new Map<string, HostileDomain>();
    const tallies = new Map<string, Tally>();
    const timings: Array<[string, number]> = [];
    const declared = { uris: new Set<string>(["qemu:///system"]), domains: new Set<string>(), names: new Set<string>() };
    /**
     * A URI holding an unpaired surrogate has no UTF-8 form: were it let through, virsh
     * would get U+FFFD in its place. connection.ts refuses such URIs at check, so any
     * such rendering in the virsh log is a problem.
     */
    const mangledUris = new Set<string>();
    const declareUri = (u: string) => {
        declared.uris.add(wire(u));
        const rendered = Buffer.from(wire(u), "utf8").toString("utf8");
        if (rendered !== wire(u)) mangledUris.add(rendered);
        return u;
    };
    const labBefore = new Map<string, { snapshots: string[]; checkpoints: string[] }>();
    const slots = limiter(20);

    const declareDomain = (d: string) => { declared.domains.add(wire(d)); return d; };
    const declareName = (n: string) => { declared.names.add(wire(n)); return n; };

    before(async function () {
        this.timeout(1_800_000);
        const tLock = Date.now();
        await takeRunLock(1_500_000);
        if (Date.now() - tLock > 5000) console.log(`      waited ${((Date.now() - tLock) / 1000).toFixed(0)} s for another run of this suite`);
        const t0 = Date.now();
        await removeStaleHostileDomains();
        await disposeAllTestDomains({ prefix: "labtmp-hostile-" });
        canaryDir = fs.mkdtempSync(path.join(os.tmpdir(), "hostile-canary-"));
        logDir = fs.mkdtempSync(path.join(os.tmpdir(), "hostile-virsh-log-"));
        wrapDir = fs.mkdtempSync(path.join(os.tmpdir(), "hostile-virsh-bin-"));
        fs.writeFileSync(path.join(wrapDir, "virsh"), VIRSH_WRAPPER, { mode: 0o755 });
        for (const d of lab.domains) {
            labBefore.set(d.name, { snapshots: await snapshotList(d.name), checkpoints: await checkpointList(d.name) });
        }
        victim = (await fresh(1, true))[0]!;
        const victimId = Number((await virshOk(["domid", "--domain", victim.uuid])).trim());
        corpus = hostileCorpus({ canaryDir, token, runningDomainId: victimId });
        // A domain named after each entry, where libvirt takes the name: the domain input can then prove literal use.
        const defineSlots = limiter(6);
        await Promise.all(corpus.map((e) => defineSlots(async () => {
            const hd = await defineHostileDomain(e.value);
            if (hd) { hostileDomains.set(e.id, hd); declareDomain(hd.uuid); }
        })));
        engine = await EngineHarness.start({
            cwd: PACKAGE_ROOT,
            env: { PATH: `${wrapDir}:${process.env.PATH ?? "/usr/bin:/bin"}`, HOSTILE_VIRSH_LOG_DIR: logDir },
        });
        timings.push(["setup (domains, hostile-named domains, server)", Date.now() - t0]);
        console.log(`      corpus: ${corpus.length} strings; ${hostileDomains.size} of them accepted by libvirt as domain names; running domain id used as a trap: ${victimId}`);
    });

    after(async function () {
        this.timeout(300_000);
        await engine?.close();
        const undef = limiter(6);
        await Promise.all([...hostileDomains.values()].map((hd) => undef(async () => {
            await undefineByUuid(hd.uuid).catch(() => undefined);
            fs.rmSync(hd.dir, { recursive: true, force: true });
        })));
        for (const d of doms) await d.dispose().catch(() => undefined);
        for (const d of [canaryDir, logDir, wrapDir]) if (d) fs.rmSync(d, { recursive: true, force: true });
        dropRunLock();
        if (tallies.size) {
            const sum: Tally = { tried: 0, refused: 0, refusedAtHost: 0, literal: 0, failed: 0 };
            for (const t of tallies.values()) for (const f of Object.keys(sum) as Array<keyof Tally>) sum[f] += t[f];
            console.log(`      hostile strings × inputs, all resources: ${row("total", sum)}`);
            if (connectionRetries) console.log(`      ${connectionRetries} idempotent call(s) (check, delete) repeated after another test run dropped the SSH connection`);
            console.log(`      timings: ${timings.map(([k, ms]) => `${k} ${(ms / 1000).toFixed(1)} s`).join("; ")}`);
        }
    });

    const row = (k: string, t: Tally) => `${k}: tried ${t.tried}, refused at check ${t.refused + t.refusedAtHost} ` +
        `(${t.refused} by validation, ${t.refusedAtHost} after asking the host), used literally ${t.literal}, failed ${t.failed}`;

    /** Throwaway domains for one test; the final test checks them all, after() removes them. */
    async function fresh(n: number, running = false): Promise<TestDomain[]> {
        const ds = await Promise.all(Array.from({ length: n }, () => makeDomain({ prefix: "labtmp-hostile-", running })));
        doms.push(...ds);
        for (const d of ds) { declareDomain(d.name); declareDomain(d.uuid); }
        return ds;
    }

    // ---- running a spec ----

    /**
     * Other test runs kill SSH sessions on this lab (the faults suite). Delete and
     * check are idempotent, so a call that lost its connection is made once more,
     * as a user would run destroy again; each such retry is counted and printed.
     */
    let connectionRetries = 0;
    const LOST = /SSH connection .* was lost|connection to .* closed during the handshake|cannot connect to 127\.0\.0\.1/;
    async function again<T>(fn: () => Promise<T>): Promise<T> {
        try { return await fn(); } catch (e) {
            if (!LOST.test((e as Error).message)) throw e;
            connectionRetries++;
            return fn();
        }
    }
    /** Check reports a lost connection as a failure naming 'connection': ask once more. */
    async function checkAgain(urn: string, news: Props) {
        const r = await engine.check(urn, {}, news);
        if (!r.failures.some((f) => LOST.test(f.reason))) return r;
        connectionRetries++;
        return engine.check(urn, {}, news);
    }
    const destroy = (s: ResourceState) => again(() => engine.destroy(s));

    async function createChecked(urn: string, checked: Props): Promise<ResourceState> {
        const { id, outs } = await engine.create(urn, checked);
        return { urn, id, inputs: checked, outs };
    }

    /** Create, check while it exists, destroy, check after; a check that fails first still destroys it. */
    async function createThenDestroy(urn: string, checked: Props, whileThere: (s: ResourceState) => Promise<void>, afterDestroy: () => Promise<void>): Promise<void> {
        const s = await createChecked(urn, checked);
        let deleted = false;
        try {
            await whileThere(s);
            await destroy(s);
            deleted = true;
            await afterDestroy();
        } finally {
            if (!deleted) await destroy(s).catch(() => undefined);
        }
    }

    async function runSpecs(specs: Spec[], label: string): Promise<string[]> {
        const t0 = Date.now();
        const problems: string[] = [];
        await Promise.all(specs.map((spec) => runSpec(spec, problems)));
        timings.push([label, Date.now() - t0]);
        for (const spec of specs) console.log(`      ${row(spec.input, tallies.get(spec.input)!)} (${((specTimes.get(spec.input) ?? 0) / 1000).toFixed(1)} s)`);
        console.log(`      ${label}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
        return problems;
    }

    const specTimes = new Map<string, number>();
    async function runSpec(spec: Spec, problems: string[]): Promise<void> {
        const started = Date.now();
        const t: Tally = { tried: 0, refused: 0, refusedAtHost: 0, literal: 0, failed: 0 };
        tallies.set(spec.input, t);
        const lanes: Lane[] = typeof spec.lanes === "number"
            ? Array.from({ length: spec.lanes }, (_, index) => ({ index, doms: [] }))
            : spec.lanes.map((ds, index) => ({ index, doms: ds }));
        const entries = corpus.filter((e) => spec.only?.(e) ?? true);
        await Promise.all(lanes.map(async (lane) => {
            for (let i = lane.index; i < entries.length; i += lanes.length) {
                const e = entries[i]!;
                await slots(() => tryOne(spec, e, lane, t, problems));
            }
        }));
        specTimes.set(spec.input, Date.now() - started);
    }

    async function tryOne(spec: Spec, e: HostileEntry, lane: Lane, t: Tally, problems: string[]): Promise<void> {
        t.tried++;
        const where = `${spec.input} ← ${e.id} (${e.label}) ${show(e.value)}`;
        const value = wire(e.value);
        try {
            const urn = engine.urn(spec.type, `h-${e.id}-${lane.index}`);
            const news = await engine.programInputs(spec.provider, spec.build(e, lane));
            const r = await checkAgain(urn, news);
            if (r.failures.length) {
                const named = r.failures.every((f) => spec.properties.includes(f.property));
                // The reason crossed gRPC once more, where an unpaired surrogate inside a string may be dropped.
                const bare = (x: string) => x.replace(/\p{Cs}/gu, "");
                const atHost = r.failures.every((f) => spec.hostProperties?.includes(f.property) && value !== "" && bare(f.reason).includes(bare(value)));
                if (named) {
                    // A refusal found on the host (no such domain, disk, snapshot) quotes the value; validation does not.
                    if (value !== "" && r.failures.every((f) => f.reason.includes(value))) t.refusedAtHost++;
                    else t.refused++;
                    return;
                }
                if (atHost) { t.refusedAtHost++; return; }
                t.failed++;
                problems.push(`${where}: refused, but not naming ${spec.properties.join(" or ")}: ${r.failures.map((f) => `${f.property}: ${f.reason}`).join("; ")}`);
                return;
            }
            if (!spec.use) {
                t.failed++;
                problems.push(`${where}: accepted at check, but it can't be used literally: expected a refusal naming ${spec.properties.join(" or ")}`);
                return;
            }
            await spec.use(e, lane, r.inputs, urn);
            t.literal++;
        } catch (err) {
            t.failed++;
            problems.push(`${where}: ${(err as Error).message.split("\n").slice(0, 8).join("\n      ")}`);
        }
    }

    const report = (problems: string[]) => assert.deepEqual(problems, [], `${problems.length} problem(s):\n  ${problems.join("\n  ")}`);

    /** An internal snapshot of a shut-off domain, created from checked inputs, checked and deleted. */
    async function internalSnapshotRoundTrip(urn: string, checked: Props, o: { uuid: string; disk: string; domainName: string; name: string; description?: string }) {
        const s = await createChecked(urn, checked);
        let deleted = false;
        try {
            assert.equal(s.outs.snapshotName, o.name, "outputs: snapshotName");
            assert.equal(s.outs.domainUuid, o.uuid, `the snapshot was taken of domain ${show(String(s.outs.domainName))} (${s.outs.domainUuid}), not of ${show(o.domainName)}`);
            if (o.description !== undefined) assert.equal(s.outs.description, o.description, "outputs: description");
            assert.deepEqual(await snapshotList(o.uuid), [o.name], "virsh snapshot-list --name shows exactly the name");
            assert.deepEqual(await qcow2Snapshots(o.disk), [o.name], "qemu-img info shows exactly the name");
            const xml = await virshOk(["snapshot-dumpxml", "--domain", o.uuid, "--snapshotname", o.name]);
            const bad = snapshotShapeProblems(xml, {
                name: o.name, description: o.description, domainName: o.domainName,
                memory: { snapshot: "no" }, disks: [{ name: "vda", snapshot: "internal" }],
            });
            assert.deepEqual(bad, [], "snapshot XML as declared");
            await destroy(s);
            deleted = true;
            assert.deepEqual(await snapshotList(o.uuid), [], "gone from libvirt after delete");
            assert.deepEqual(await qcow2Snapshots(o.disk), [], "gone from qcow2 after delete (not a metadata-only delete)");
        } finally {
            if (!deleted) await destroy(s).catch(() => undefined);
        }
    }

    /** A path for a file input: absolute strings as they are, anything else inside the lane's own folder. */
    const fileIn = (dir: string, s: string) => (wire(s).startsWith("/") ? wire(s) : `${dir}/files/${wire(s)}`);

    function assertOurs(p: string, dir: string): void {
        assert.ok(p.startsWith(`${dir}/`) && !p.split("/").includes(".."), `accepted a path outside the test's folder, refusing to create it: ${show(p)}`);
    }

    // ---- DomainSnapshot ---------------------------------------------------------------------------

    it("DomainSnapshot: every hostile string in every string input is refused naming it, or used literally", async function () {
        this.timeout(1_200_000);
        const ssh = sshConnection();
        const [off, running] = await Promise.all([fresh(17), fresh(4, true)]);
        const checkOnly = off[13]!;
        const specs: Spec[] = [
            {
                input: "DomainSnapshot.domain", type: TYPE.snapshot, provider: DomainSnapshotProvider, properties: ["domain"], lanes: 6,
                build: (e) => ({ domain: declareDomain(e.value), snapshotName: declareName("hostile-domain") }),
                use: async (e, _lane, checked, urn) => {
                    const hd = hostileDomains.get(e.id);
                    if (!hd) {
                        const s = await createChecked(urn, checked);
                        await destroy(s);
                        assert.fail(`accepted, though no domain is named this: the snapshot went to domain ${show(String(s.outs.domainName))} (${s.outs.domainUuid})`);
                    }
                    await internalSnapshotRoundTrip(urn, checked, { uuid: hd.uuid, disk: hd.disk, domainName: hd.name, name: "hostile-domain" });
                },
            },
            ...(["local", "ssh"] as const).map((via, k): Spec => ({
                input: `DomainSnapshot.snapshotName (${via})`, type: TYPE.snapshot, provider: DomainSnapshotProvider, properties: ["snapshotName"],
                lanes: [[off[3 * k]!], [off[3 * k + 1]!], [off[3 * k + 2]!]],
                build: (e, lane) => ({ ...(via === "ssh" ? { connection: ssh } : {}), domain: lane.doms[0]!.name, snapshotName: declareName(e.value) }),
                use: (e, lane, checked, urn) => internalSnapshotRoundTrip(urn, checked, { uuid: lane.doms[0]!.uuid, disk: lane.doms[0]!.disk, domainName: lane.doms[0]!.name, name: wire(e.value) }),
            })),
            {
                input: "DomainSnapshot.description (ssh)", type: TYPE.snapshot, provider: DomainSnapshotProvider, properties: ["description"],
                lanes: [[off[6]!], [off[7]!], [off[8]!]],
                build: (e, lane) => ({ connection: ssh, domain: lane.doms[0]!.name, snapshotName: declareName(`d-${e.id}`), description: e.value }),
                use: (e, lane, checked, urn) => internalSnapshotRoundTrip(urn, checked, { uuid: lane.doms[0]!.uuid, disk: lane.doms[0]!.disk, domainName: lane.doms[0]!.name, name: `d-${e.id}`, description: wire(e.value) }),
            },
            {
                input: "DomainSnapshot.memoryFile (ssh)", type: TYPE.snapshot, provider: DomainSnapshotProvider, properties: ["memoryFile"],
                lanes: running.map((d) => [d]),
                build: (e, lane) => ({
                    connection: ssh, domain: lane.doms[0]!.name, snapshotName: declareName(`m-${e.id}`),
                    kind: "external", memory: "external", memoryFile: fileIn(lane.doms[0]!.dir, e.value),
                }),
                use: async (e, lane, checked, urn) => {
                    const dom = lane.doms[0]!;
                    const file = fileIn(dom.dir, e.value);
                    assertOurs(file, dom.dir);
                    fs.mkdirSync(path.dirname(file), { recursive: true });
                    let overlay = "";
                    await createThenDestroy(urn, checked, async (s) => {
                        assert.equal(s.outs.memoryFile, file, "outputs: memoryFile");
                        assert.ok(fs.statSync(file).size > 0, "the memory file is where declared");
                        overlay = (s.outs.diskFiles as Record<string, string>).vda!;
                        const xml = await virshOk(["snapshot-dumpxml", "--domain", dom.uuid, "--snapshotname", `m-${e.id}`]);
                        assert.deepEqual(snapshotShapeProblems(xml, {
                            name: `m-${e.id}`, domainName: dom.name, memory: { snapshot: "external", file }, disks: [{ name: "vda", snapshot: "external", file: overlay }],
                        }), [], "snapshot XML as declared");
                    }, async () => {
                        assert.equal(fs.existsSync(file), false, "the memory file is removed on delete");
                        assert.equal(fs.existsSync(overlay), false, "the overlay is merged and removed on delete");
                        assert.equal(await diskSource(dom.uuid, false), dom.disk, "the domain runs on its base image again");
                        assert.deepEqual(await snapshotList(dom.uuid), []);
                    });
                },
            },
            {
                input: "DomainSnapshot.disks[].name", type: TYPE.snapshot, provider: DomainSnapshotProvider, properties: ["disks[0].name"], lanes: 3,
                build: (e) => ({ domain: checkOnly.name, snapshotName: declareName("hostile-disk"), disks: [{ name: e.value, snapshot: "internal" }] }),
            },
            {
                input: "DomainSnapshot.disks[].file", type: TYPE.snapshot, provider: DomainSnapshotProvider, properties: ["disks[0].file"],
                lanes: [[off[9]!], [off[10]!], [off[11]!]],
                build: (e, lane) => ({
                    domain: lane.doms[0]!.name, snapshotName: declareName(`f-${e.id}`), kind: "external",
                    disks: [{ name: "vda", snapshot: "external", file: fileIn(lane.doms[0]!.dir, e.value) }],
                }),
                use: async (e, lane, checked, urn) => {
                    const dom = lane.doms[0]!;
                    const file = fileIn(dom.dir, e.value);
                    assertOurs(file, dom.dir);
                    fs.mkdirSync(path.dirname(file), { recursive: true });
                    await createThenDestroy(urn, checked, async (s) => {
                        assert.deepEqual(s.outs.diskFiles, { vda: file }, "outputs: diskFiles");
                        assert.ok(fs.existsSync(file), "the overlay is where declared");
                        assert.equal((await qemuImgInfo(file))["backing-filename"], dom.disk, "the overlay sits on the base image");
                        assert.equal(await diskSource(dom.uuid, true), file, "the domain now uses the overlay");
                        const xml = await virshOk(["snapshot-dumpxml", "--domain", dom.uuid, "--snapshotname", `f-${e.id}`]);
                        assert.deepEqual(snapshotShapeProblems(xml, {
                            name: `f-${e.id}`, domainName: dom.name, memory: { snapshot: "no" }, disks: [{ name: "vda", snapshot: "external", file }],
                        }), [], "snapshot XML as declared");
                    }, async () => {
                        assert.equal(await diskSource(dom.uuid, true), dom.disk, "the domain uses its base image again");
                        assert.deepEqual(await snapshotList(dom.uuid), []);
                    });
                },
            },
            {
                input: "DomainSnapshot.connection.libvirtUri (local)", type: TYPE.snapshot, provider: DomainSnapshotProvider,
                properties: ["connection.libvirtUri"], hostProperties: ["connection"], lanes: 3,
                build: (e) => ({ connection: { libvirtUri: declareUri(e.value) }, domain: checkOnly.name, snapshotName: declareName("hostile-uri") }),
            },
            {
                input: "DomainSnapshot.connection.libvirtUri (local, as a URI fragment)", type: TYPE.snapshot, provider: DomainSnapshotProvider,
                properties: ["connection.libvirtUri"], hostProperties: ["connection"], lanes: [[off[12]!], [off[15]!], [off[16]!]],
                build: (e, lane) => ({ connection: { libvirtUri: declareUri(`qemu:///system#${e.value}`) }, domain: lane.doms[0]!.name, snapshotName: declareName(`u-${e.id}`) }),
                use: (e, lane, checked, urn) => internalSnapshotRoundTrip(urn, checked, { uuid: lane.doms[0]!.uuid, disk: lane.doms[0]!.disk, domainName: lane.doms[0]!.name, name: `u-${e.id}` }),
            },
            {
                // Over SSH the URI crosses the remote shell. Only the shell and quote entries: every distinct URI
                // starts its own virsh shell sessions, which hold SSH channels for 30 s (see the report), so this
                // spec gets its own SSH connection (the host key with a comment is another pool key) and stays short.
                input: "DomainSnapshot.connection.libvirtUri (ssh, as a URI fragment; shell and quote entries)", type: TYPE.snapshot, provider: DomainSnapshotProvider,
                properties: ["connection.libvirtUri"], hostProperties: ["connection"], lanes: [[off[14]!]],
                only: (e) => /^(shell|quote)-/.test(e.id),
                build: (e, lane) => ({ connection: { ...ssh, hostKey: `${lab.hostKey} uri-spec`, libvirtUri: `qemu:///system#${e.value}` }, domain: lane.doms[0]!.name, snapshotName: declareName(`us-${e.id}`) }),
                use: (e, lane, checked, urn) => internalSnapshotRoundTrip(urn, checked, { uuid: lane.doms[0]!.uuid, disk: lane.doms[0]!.disk, domainName: lane.doms[0]!.name, name: `us-${e.id}` }),
            },
            {
                input: "DomainSnapshot.connection.user (ssh)", type: TYPE.snapshot, provider: DomainSnapshotProvider,
                properties: ["connection.user"], hostProperties: ["connection"], lanes: 3,
                build: (e) => ({ connection: { ...ssh, user: e.value, dialErrorLimit: 1 }, domain: checkOnly.name, snapshotName: declareName("hostile-user") }),
            },
            {
                input: "DomainSnapshot.connection.host (ssh)", type: TYPE.snapshot, provider: DomainSnapshotProvider,
                properties: ["connection.host"], hostProperties: ["connection"], lanes: 3,
                build: (e) => ({ connection: { ...ssh, host: e.value, dialErrorLimit: 1, perDialTimeout: 5 }, domain: checkOnly.name, snapshotName: declareName("hostile-host") }),
            },
        ];
        report(await runSpecs(specs, "DomainSnapshot"));
    });

    // ---- RestorePoint ---------------------------------------------------------------------------

    it("RestorePoint: every hostile string in domains[], snapshotName and description is refused naming it, or used literally", async () => {
        const memberSnapshots = async (urn: string, checked: Props, members: Array<{ uuid: string; disk: string; name: string }>, o: { name: string; description?: string }) => {
            const s = await createChecked(urn, checked);
            let deleted = false;
            try {
                const snaps = s.outs.snapshots as Array<{ domainUuid: string; snapshotName: string }>;
                assert.deepEqual(snaps.map((m) => m.domainUuid), members.map((m) => m.uuid), "outputs: one snapshot per declared domain, on that domain");
                assert.ok(snaps.every((m) => m.snapshotName === o.name), "outputs: snapshotName");
                for (const m of members) {
                    assert.deepEqual(await snapshotList(m.uuid), [o.name], `snapshot-list of ${show(m.name)}`);
                    assert.deepEqual(await qcow2Snapshots(m.disk), [o.name], `qemu-img info of ${show(m.name)}`);
                    const xml = await virshOk(["snapshot-dumpxml", "--domain", m.uuid, "--snapshotname", o.name]);
                    assert.deepEqual(snapshotShapeProblems(xml, {
                        name: o.name, description: o.description, domainName: m.name, memory: { snapshot: "no" }, disks: [{ name: "vda", snapshot: "internal" }],
                    }), [], "snapshot XML as declared");
                }
                await destroy(s);
                deleted = true;
                for (const m of members) {
                    assert.deepEqual(await snapshotList(m.uuid), [], "gone after delete");
                    assert.deepEqual(await qcow2Snapshots(m.disk), [], "gone from qcow2 after delete");
                }
            } finally {
                if (!deleted) await destroy(s).catch(() => undefined);
            }
        };
        const member = (d: TestDomain) => ({ uuid: d.uuid, disk: d.disk, name: d.name });
        const off = await fresh(9);
        const specs: Spec[] = [
            {
                input: "RestorePoint.domains[]", type: TYPE.restorePoint, provider: RestorePointProvider, properties: ["domains[0]"], lanes: 4,
                build: (e) => ({ domains: [declareDomain(e.value)], snapshotName: declareName("hostile-rp") }),
                use: async (e, _lane, checked, urn) => {
                    const hd = hostileDomains.get(e.id);
                    if (!hd) {
                        const s = await createChecked(urn, checked);
                        await destroy(s);
                        assert.fail(`accepted, though no domain is named this: snapshots went to ${JSON.stringify(s.outs.snapshots)}`);
                    }
                    await memberSnapshots(urn, checked, [{ uuid: hd.uuid, disk: hd.disk, name: hd.name }], { name: "hostile-rp" });
                },
            },
            {
                input: "RestorePoint.snapshotName", type: TYPE.restorePoint, provider: RestorePointProvider, properties: ["snapshotName"],
                lanes: [[off[0]!, off[1]!], [off[2]!, off[3]!], [off[4]!, off[5]!]],
                build: (e, lane) => ({ domains: lane.doms.map((d) => d.name), snapshotName: declareName(e.value) }),
                use: (e, lane, checked, urn) => memberSnapshots(urn, checked, lane.doms.map(member), { name: wire(e.value) }),
            },
            {
                input: "RestorePoint.description", type: TYPE.restorePoint, provider: RestorePointProvider, properties: ["description"],
                lanes: [[off[6]!], [off[7]!], [off[8]!]],
                build: (e, lane) => ({ domains: lane.doms.map((d) => d.name), snapshotName: declareName(`rd-${e.id}`), description: e.value }),
                use: (e, lane, checked, urn) => memberSnapshots(urn, checked, lane.doms.map(member), { name: `rd-${e.id}`, description: wire(e.value) }),
            },
        ];
        report(await runSpecs(specs, "RestorePoint"));
    });

    // ---- DomainCheckpoint ---------------------------------------------------------------------------

    it("DomainCheckpoint: every hostile string in checkpointName, description and disks[].bitmap is refused naming it, or used literally", async () => {
        const ssh = sshConnection();
        const running = await fresh(6, true);
        const roundTrip = async (urn: string, checked: Props, dom: TestDomain, o: { name: string; description?: string }) => {
            const s = await createChecked(urn, checked);
            let deleted = false;
            try {
                assert.equal(s.outs.checkpointName, o.name, "outputs: checkpointName");
                if (o.description !== undefined) assert.equal(s.outs.description, o.description, "outputs: description");
                assert.deepEqual(await checkpointList(dom.uuid), [o.name], "virsh checkpoint-list --name shows exactly the name");
                const xml = await virshOk(["checkpoint-dumpxml", "--domain", dom.uuid, "--checkpointname", o.name, "--no-domain"]);
                assert.deepEqual(checkpointShapeProblems(xml, { name: o.name, description: o.description, bitmap: o.name }), [], "checkpoint XML as declared");
                await destroy(s);
                deleted = true;
                assert.deepEqual(await checkpointList(dom.uuid), [], "gone after delete");
            } finally {
                if (!deleted) await destroy(s).catch(() => undefined);
            }
        };
        const specs: Spec[] = [
            {
                input: "DomainCheckpoint.checkpointName (ssh)", type: TYPE.checkpoint, provider: DomainCheckpointProvider, properties: ["checkpointName"],
                lanes: [[running[0]!], [running[4]!]],
                build: (e, lane) => ({ connection: ssh, domain: lane.doms[0]!.name, checkpointName: declareName(e.value) }),
                use: (e, lane, checked, urn) => roundTrip(urn, checked, lane.doms[0]!, { name: wire(e.value) }),
            },
            {
                input: "DomainCheckpoint.description (ssh)", type: TYPE.checkpoint, provider: DomainCheckpointProvider, properties: ["description"],
                lanes: [[running[2]!], [running[3]!], [running[5]!]],
                build: (e, lane) => ({ connection: ssh, domain: lane.doms[0]!.name, checkpointName: declareName(`cd-${e.id}`), description: e.value }),
                use: (e, lane, checked, urn) => roundTrip(urn, checked, lane.doms[0]!, { name: `cd-${e.id}`, description: wire(e.value) }),
            },
            {
                input: "DomainCheckpoint.disks[].bitmap", type: TYPE.checkpoint, provider: DomainCheckpointProvider, properties: ["disks[0].bitmap"], lanes: 3,
                build: (e) => ({ domain: running[0]!.name, checkpointName: declareName("hostile-bitmap"), disks: [{ name: "vda", checkpoint: "bitmap", bitmap: e.value }] }),
            },
            {
                input: "DomainCheckpoint.checkpointName = disks[].bitmap", type: TYPE.checkpoint, provider: DomainCheckpointProvider,
                properties: ["checkpointName", "disks[0].bitmap"], lanes: [[running[1]!]],
                build: (e, lane) => ({ domain: lane.doms[0]!.name, checkpointName: declareName(e.value), disks: [{ name: "vda", checkpoint: "bitmap", bitmap: e.value }] }),
                use: (e, lane, checked, urn) => roundTrip(urn, checked, lane.doms[0]!, { name: wire(e.value) }),
            },
        ];
        report(await runSpecs(specs, "DomainCheckpoint"));
    });

    // ---- SnapshotRevert ---------------------------------------------------------------------------

    it("SnapshotRevert: every hostile string in snapshot is refused naming it, or reverts exactly that snapshot", async () => {
        const region = 64 * 1024;
        const off = await fresh(5);
        const spec: Spec = {
            input: "SnapshotRevert.snapshot", type: TYPE.revert, provider: SnapshotRevertProvider, properties: ["snapshot"],
            lanes: off.map((d) => [d]),
            build: (e, lane) => ({ domain: lane.doms[0]!.name, snapshot: declareName(e.value) }),
            // Check found no such snapshot yet (a host refusal): see below.
        };
        // Check first refuses, naming 'snapshot', both invalid names (validation) and valid ones (no such snapshot yet).
        // Then, for every name libvirt takes, the snapshot is made with virsh, and SnapshotRevert must revert exactly it.
        const t0 = Date.now();
        const problems: string[] = [];
        const t: Tally = { tried: 0, refused: 0, refusedAtHost: 0, literal: 0, failed: 0 };
        tallies.set(spec.input, t);
        const lanes: Lane[] = (spec.lanes as TestDomain[][]).map((doms, index) => ({ index, doms }));
        await Promise.all(lanes.map(async (lane) => {
            const dom = lane.doms[0]!;
            for (let i = lane.index; i < corpus.length; i += lanes.length) {
                const e = corpus[i]!;
                const value = wire(e.value);
                const where = `${spec.input} ← ${e.id} (${e.label}) ${show(e.value)}`;
                t.tried++;
                await slots(async () => {
                    try {
                        const urn = engine.urn(spec.type, `h-${e.id}`);
                        const news = await engine.programInputs(SnapshotRevertProvider, spec.build(e, lane));
                        const before = await engine.check(urn, {}, news);
                        assert.ok(before.failures.length > 0, "check accepted a snapshot that does not exist");
                        assert.deepEqual([...new Set(before.failures.map((f) => f.property))], ["snapshot"], `failures name 'snapshot': ${JSON.stringify(before.failures)}`);
                        const noSuch = before.failures.every((f) => /has no snapshot/.test(f.reason) && f.reason.includes(value));
                        if (!noSuch) { t.refused++; return; }
                        // A name check let through: make that snapshot (pattern p), change the disk (q), revert, read p.
                        const p = 1 + (i % 200), q = 0xfe;
                        await qemuIoWrite(dom.disk, p, 0, region);
                        const xmlFile = path.join(dom.dir, "snap.xml");
                        fs.writeFileSync(xmlFile, `<domainsnapshot><name>${xmlEscape(value)}</name></domainsnapshot>`);
                        const made = await virshLocal(["snapshot-create", "--domain", dom.uuid, "--xmlfile", xmlFile]);
                        if (made.code !== 0) { t.refusedAtHost++; return; } // libvirt itself won't take the name
                        try {
                            await qemuIoWrite(dom.disk, q, 0, region);
                            const r = await engine.check(urn, {}, news);
                            assert.deepEqual(r.failures, [], "check accepts a snapshot that exists");
                            const { outs } = await engine.create(urn, r.inputs);
                            assert.equal(outs.snapshot, value, "outputs: snapshot");
                            assert.equal(outs.domainUuid, dom.uuid, "outputs: domainUuid");
                            assert.equal(await qemuIoRead(dom.disk, p, 0, region), true, "the disk holds the snapshot's data again");
                            t.literal++;
                        } finally {
                            await virshOk(["snapshot-delete", "--domain", dom.uuid, "--snapshotname", value]);
                        }
                        assert.deepEqual(await snapshotList(dom.uuid), []);
                    } catch (err) {
                        t.failed++;
                        problems.push(`${where}: ${(err as Error).message.split("\n").slice(0, 8).join("\n      ")}`);
                    }
                });
            }
        }));
        timings.push(["SnapshotRevert", Date.now() - t0]);
        console.log(`      ${row(spec.input, t)}`);
        console.log(`      SnapshotRevert: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
        report(problems);
    });

    // ---- afterwards ---------------------------------------------------------------------------

    it("afterwards: no canary file, nothing left on our domains or the lab's, and virsh got only the options it was meant to get", async () => {
        const problems: string[] = [];
        // Canaries: absolute ones in their folder, bare ones wherever a shell could have started.
        for (const e of corpus) for (const c of e.canaries) if (c.startsWith("/") && fs.existsSync(c)) problems.push(`canary ${c} exists (${e.id}: ${e.label})`);
        if (fs.readdirSync(canaryDir).length) problems.push(`the canary folder is not empty: ${fs.readdirSync(canaryDir).join(", ")}`);
        const shellHomes = [PACKAGE_ROOT, process.cwd(), "/", "/root", os.homedir(), os.tmpdir(), "/var/lib/libvirt", "/var/lib/libvirt/qemu", lab.labDir];
        const bare = `${RELATIVE_CANARY_PREFIX}${token}`;
        for (const dir of shellHomes) {
            for (const f of fs.existsSync(dir) ? fs.readdirSync(dir) : []) if (f.startsWith(bare)) problems.push(`canary ${path.join(dir, f)} exists`);
        }
        const walk = (dir: string): string[] => fs.readdirSync(dir, { withFileTypes: true }).flatMap((d) => {
            const p = path.join(dir, d.name);
            return [...(d.name.startsWith(bare) ? [p] : []), ...(d.isDirectory() ? walk(p) : [])];
        });
        for (const d of [...doms.map((x) => x.dir), ...[...hostileDomains.values()].map((h) => h.dir)]) problems.push(...walk(d).map((p) => `canary ${p} exists`));

        // Our domains: no snapshot, checkpoint or overlay left; qcow2 holds no snapshot.
        for (const d of doms) {
            if ((await snapshotList(d.uuid)).length) problems.push(`domain ${d.name} still has snapshots ${JSON.stringify(await snapshotList(d.uuid))}`);
            if ((await checkpointList(d.uuid)).length) problems.push(`domain ${d.name} still has checkpoints ${JSON.stringify(await checkpointList(d.uuid))}`);
            if ((await qcow2Snapshots(d.disk)).length) problems.push(`disk of ${d.name} still holds qcow2 snapshots ${JSON.stringify(await qcow2Snapshots(d.disk))}`);
            const src = await diskSource(d.uuid, false);
            if (src !== d.disk) problems.push(`domain ${d.name} runs on ${src}, not its base image`);
        }
        for (const hd of hostileDomains.values()) {
            if ((await snapshotList(hd.uuid)).length) problems.push(`hostile-named domain ${show(hd.name)} still has snapshots`);
            if ((await qcow2Snapshots(hd.disk)).length) problems.push(`disk of hostile-named domain ${show(hd.name)} still holds qcow2 snapshots`);
        }
        // The lab's domains: nothing of ours appeared (other test runs may be using them, so only our names count).
        for (const d of lab.domains) {
            const was = labBefore.get(d.name)!;
            const now = { snapshots: await snapshotList(d.name), checkpoints: await checkpointList(d.name) };
            for (const n of [...now.snapshots.filter((x) => !was.snapshots.includes(x)), ...now.checkpoints.filter((x) => !was.checkpoints.includes(x))]) {
                if (declared.names.has(n)) problems.push(`lab domain ${d.name} gained ${show(n)}`);
            }
        }
        // virsh: the wrapper logged every local invocation, and every line its shell sessions read.
        const { processes, sessions, sessionLines } = readVirshLog(logDir);
        if (processes.length < 100) problems.push(`the virsh wrapper logged only ${processes.length} calls: is it on the server's PATH?`);
        const mangled = processes.filter((a) => mangledUris.has(a[1] ?? ""));
        if (mangled.length) problems.push(`${mangled.length} virsh calls got a libvirtUri with U+FFFD in place of an unpaired surrogate: check should have refused it`);
        for (const argv of processes) problems.push(...argvProblems(argv, declared));
        for (const cmd of sessions) {
            if (!SESSION_READ_ONLY.has(cmd[0] ?? "")) problems.push(`virsh's shell ran ${JSON.stringify(cmd)}: only read-only commands belong in a session`);
            problems.push(...argvProblems(["-c", "qemu:///system", ...cmd], declared));
        }
        const deletes = processes.filter((a) => a[2] === "snapshot-delete").length;
        console.log(`      virsh wrapper: ${processes.length} virsh processes (${deletes} snapshot-delete) and ${sessions.length} commands in ${sessionLines} lines of virsh shell sessions checked`);
        report(problems);
    });
});
