// libvirt XML in and out, through fast-xml-parser. Building XML with a real
// builder means names and descriptions are escaped, never spliced in.
import { XMLBuilder, XMLParser } from "fast-xml-parser";

const ARRAYS = new Set([
    "domainsnapshot.disks.disk",
    "domaincheckpoint.disks.disk",
    "domain.devices.disk",
    "domain.devices.channel",
    "domainsnapshot.domain.devices.disk",
    // Without this a snapshot of a domain with exactly one channel (a guest agent) failed to parse.
    "domainsnapshot.domain.devices.channel",
]);

const parser = new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: "@",
    parseTagValue: false,
    parseAttributeValue: false,
    trimValues: false,
    isArray: (_name, jpath) => ARRAYS.has(String(jpath)),
});

const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: "@", format: true, suppressEmptyNode: true });

// Order-preserving parser/builder pair for editing libvirt's own XML in place
// (redefine), so nothing it wrote is reordered or dropped.
const orderedParser = new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: "@",
    preserveOrder: true,
    parseTagValue: false,
    parseAttributeValue: false,
    trimValues: false,
    commentPropName: "#comment",
});
const orderedBuilder = new XMLBuilder({
    ignoreAttributes: false,
    attributeNamePrefix: "@",
    preserveOrder: true,
    commentPropName: "#comment",
    suppressEmptyNode: true,
});

type Node = Record<string, unknown>;

function text(v: unknown): string | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v === "string") return v;
    if (typeof v === "object" && "#text" in (v as Node)) return String((v as Node)["#text"]);
    if (typeof v === "object") return "";
    return String(v);
}

function attr(n: unknown, name: string): string | undefined {
    if (!n || typeof n !== "object") return undefined;
    const v = (n as Node)[`@${name}`];
    return v === undefined ? undefined : String(v);
}

// ---- domain ----------------------------------------------------------------

export interface DomainDisk {
    /** Target device, e.g. vda. */
    target: string;
    device: string;
    /** file, block, network, volume... */
    type: string;
    /** qcow2, raw... */
    format?: string;
    /** Where the data is: a file's path, a block device's path, a pool volume's name, or a network disk's networkLocation(). */
    source?: string;
    /** A network disk's source as libvirt names it: its protocol, its server(s) and the name on them. */
    network?: NetworkSource;
    readonly: boolean;
    /** The domain's own snapshot policy for this disk (`<disk snapshot=...>`): no, internal, external, manual; absent when unset. */
    snapshot?: string;
}

/** `<source protocol='...' name='...'><host name='...' port='...'/>...</source>`, as disks and snapshot overlays have it. */
export interface NetworkSource {
    protocol: string;
    /** The image's name on the server (an rbd pool/image, an NBD export, a gluster volume/path...); absent when none is given. */
    name?: string;
    /** Each <host>: `name[:port]`, or `unix:SOCKET` for a host reached over a UNIX socket. */
    hosts: string[];
}

/** One string for a network source: `protocol://host[:port][,host...]/name`, so disks on different servers differ. */
export function networkLocation(n: NetworkSource): string {
    return `${n.protocol}://${n.hosts.join(",")}${n.name !== undefined ? `/${n.name}` : ""}`;
}

/** A <source>'s path on the host: `file=` for a file, `dev=` for a block device. */
function sourcePath(src: unknown): string | undefined {
    return attr(src, "file") ?? attr(src, "dev");
}

function networkSourceOf(src: unknown): NetworkSource | undefined {
    const protocol = attr(src, "protocol");
    if (protocol === undefined) return undefined;
    const raw = (src as Node).host;
    const hosts = (Array.isArray(raw) ? raw : raw === undefined ? [] : [raw]).map((h: unknown) => {
        const socket = attr(h, "socket");
        if (socket !== undefined) return `unix:${socket}`;
        const name = attr(h, "name") ?? "";
        const port = attr(h, "port");
        return port !== undefined ? `${name}:${port}` : name;
    });
    const name = attr(src, "name");
    return { protocol, ...(name !== undefined ? { name } : {}), hosts };
}

export interface DomainInfo {
    name: string;
    uuid: string;
    disks: DomainDisk[];
    /** A qemu guest agent channel exists and libvirt sees it connected. */
    guestAgent: "none" | "disconnected" | "connected";
    /** The guest's RAM in bytes: <currentMemory>, else <memory>; absent when the XML names neither. */
    memoryBytes?: number;
    /** Firmware in pflash (UEFI), which limits internal snapshots; absent for a BIOS or ROM loader. */
    pflash?: PflashFirmware;
    /** The maker's mark in <metadata> (moments/maker.ts), where there is one. */
    makerMark?: MakerMark;
}

/** Which resource takes a snapshot or checkpoint, and its name: written into the domain's <metadata> while it does. */
export interface MakerMark {
    /** The resource's URN. */
    resource: string;
    /** The snapshot's or checkpoint's name. */
    name: string;
}

/** The XML namespace of the maker's mark: libvirt keeps one element per namespace in a domain's <metadata>. */
export const MAKER_NS = "urn:pulumi-libvirt-snapshots:maker";

/** The mark's element, as `virsh metadata --set` takes it (libvirt adds the namespace). */
export function makerMarkXml(mark: MakerMark): string {
    return builder.build({ maker: { "@resource": mark.resource, "@name": mark.name } }).trim();
}

/** The mark among a domain's <metadata> elements: the one in MAKER_NS, whatever prefix libvirt gave it. */
function makerMarkOf(metadata: unknown): MakerMark | undefined {
    if (!metadata || typeof metadata !== "object") return undefined;
    for (const el of Object.values(metadata as Node)) {
        if (!el || typeof el !== "object") continue;
        const ns = Object.entries(el as Node).find(([k, v]) => k.startsWith("@xmlns") && v === MAKER_NS);
        const resource = attr(el, "resource");
        const name = attr(el, "name");
        if (ns && resource !== undefined && name !== undefined) return { resource, name };
    }
    return undefined;
}

export interface PflashFirmware {
    /** The loader image (<loader>), when the XML names it yet. */
    loader?: string;
    /** The UEFI variable store (<nvram>), when the XML names it yet. */
    nvram?: string;
    /** The variable store's format: <nvram format=...>, 'raw' where the XML names none (libvirt 9.0 drops the attribute: measured). */
    nvramFormat: string;
    /** <loader stateless='yes'>: the firmware keeps no variables between boots, so there is no NVRAM at all. */
    stateless?: true;
}

const MEMORY_UNITS: Record<string, number> = {
    b: 1,
    bytes: 1,
    kb: 1e3,
    k: 1024,
    kib: 1024,
    mb: 1e6,
    m: 1024 ** 2,
    mib: 1024 ** 2,
    gb: 1e9,
    g: 1024 ** 3,
    gib: 1024 ** 3,
    tb: 1e12,
    t: 1024 ** 4,
    tib: 1024 ** 4,
};

/** A libvirt memory size (`<memory unit='KiB'>65536</memory>`; KiB when no unit is given) in bytes. */
function memoryBytesOf(n: unknown): number | undefined {
    const value = Number(text(n)?.trim());
    const factor = MEMORY_UNITS[(attr(n, "unit") ?? "KiB").toLowerCase()];
    return Number.isFinite(value) && factor !== undefined ? value * factor : undefined;
}

export function parseDomainXml(xml: string): DomainInfo {
    const d = (parser.parse(xml) as Node).domain as Node | undefined;
    if (!d) throw new Error("not a libvirt domain XML document");
    return domainFromNode(d);
}

function domainFromNode(d: Node): DomainInfo {
    const devices = (d.devices ?? {}) as Node;
    const disks = ((devices.disk ?? []) as Node[]).map((n): DomainDisk => {
        const src = n.source as Node | undefined;
        const type = attr(n, "type") ?? "file";
        const network = type === "network" ? networkSourceOf(src) : undefined;
        const snapshot = attr(n, "snapshot");
        return {
            target: attr(n.target, "dev") ?? "",
            device: attr(n, "device") ?? "disk",
            type,
            format: attr(n.driver, "type"),
            source: network ? networkLocation(network) : (sourcePath(src) ?? attr(src, "name") ?? attr(src, "volume")),
            ...(network ? { network } : {}),
            readonly: n.readonly !== undefined,
            ...(snapshot !== undefined ? { snapshot } : {}),
        };
    });
    let guestAgent: DomainInfo["guestAgent"] = "none";
    for (const ch of (devices.channel ?? []) as Node[]) {
        if (attr(ch.target, "name") === "org.qemu.guest_agent.0") {
            guestAgent = attr(ch.target, "state") === "connected" ? "connected" : "disconnected";
        }
    }
    const memoryBytes = memoryBytesOf(d.currentMemory) ?? memoryBytesOf(d.memory);
    const makerMark = makerMarkOf(d.metadata);
    return {
        name: text(d.name) ?? "",
        uuid: text(d.uuid) ?? "",
        disks,
        guestAgent,
        ...(memoryBytes !== undefined ? { memoryBytes } : {}),
        ...pflashOf(d.os),
        ...(makerMark ? { makerMark } : {}),
    };
}

/**
 * <loader type='pflash'> in the XML libvirt shows: the firmware runs from flash and keeps its variables in the NVRAM file.
 * <os firmware='efi'> alone is not enough: libvirt 9.0 chooses the loader only when it starts the domain, and takes an
 * internal snapshot of it while it is shut off (measured); 11.3 chooses it at define, so its XML names it.
 */
function pflashOf(os: unknown): { pflash?: PflashFirmware } {
    if (!os || typeof os !== "object") return {};
    const loader = (os as Node).loader;
    const nvram = (os as Node).nvram;
    if (attr(loader, "type") !== "pflash") return {};
    const loaderPath = text(loader)?.trim() || undefined;
    const stateless = attr(loader, "stateless") === "yes";
    const nvramPath = stateless ? undefined : nvramPathOf(nvram);
    return {
        pflash: {
            ...(loaderPath ? { loader: loaderPath } : {}),
            ...(nvramPath ? { nvram: nvramPath } : {}),
            nvramFormat: attr(nvram, "format") ?? "raw",
            ...(stateless ? { stateless: true } : {}),
        },
    };
}

/**
 * The NVRAM's path: the element's text (`<nvram>/path</nvram>`), or its <source> in the newer form libvirt writes for
 * `<nvram type='file'|'block'|'network'>`, where the element's own text is only the whitespace between children.
 */
function nvramPathOf(nvram: unknown): string | undefined {
    if (nvram && typeof nvram === "object" && (nvram as Node).source !== undefined) {
        const src = (nvram as Node).source;
        const network = networkSourceOf(src);
        return sourcePath(src) ?? (network ? networkLocation(network) : undefined);
    }
    return text(nvram)?.trim() || undefined;
}

/**
 * Each disk's chain of images as libvirt's domain XML records it, top first. `complete` is true only where the
 * XML ends the chain with an empty <backingStore/> (a running domain's live XML does); an inactive XML may
 * stop short of images libvirt has not looked at yet.
 */
export function diskChainsOf(xml: string): Map<string, { files: string[]; complete: boolean }> {
    const d = (parser.parse(xml) as Node).domain as Node | undefined;
    if (!d) throw new Error("not a libvirt domain XML document");
    const out = new Map<string, { files: string[]; complete: boolean }>();
    for (const n of ((d.devices as Node | undefined)?.disk ?? []) as Node[]) {
        const target = attr(n.target, "dev");
        const top = attr(n.source, "file");
        if (!target || !top) continue;
        const files = [top];
        let b: unknown = n.backingStore;
        let complete = false;
        for (;;) {
            const file = b && typeof b === "object" ? attr((b as Node).source, "file") : undefined;
            if (!file) {
                complete = b === "" || (typeof b === "object" && b !== null && Object.keys(b).length === 0);
                break;
            }
            files.push(file);
            b = (b as Node).backingStore;
        }
        out.set(target, { files, complete });
    }
    return out;
}

// ---- snapshot --------------------------------------------------------------

export interface SnapshotDisk {
    name: string;
    snapshot: string;
    type?: string;
    driverType?: string;
    /** An external overlay's path on the host: a file (<source file>) or a block device (<source dev>). */
    file?: string;
    /** An external overlay on the network (<source protocol name><host/></source>): it has no path on the host. */
    network?: NetworkSource;
}

/** Where an external snapshot put a disk's overlay: its path on the host, or its network location; undefined when unnamed. */
export function overlayLocation(d: SnapshotDisk): string | undefined {
    return d.file ?? (d.network ? networkLocation(d.network) : undefined);
}

export interface SnapshotInfo {
    name: string;
    description?: string;
    state: string;
    creationTime: number;
    parent?: string;
    memory: { snapshot: string; file?: string };
    disks: SnapshotDisk[];
    domain?: DomainInfo;
}

export function parseSnapshotXml(xml: string): SnapshotInfo {
    const s = (parser.parse(xml) as Node).domainsnapshot as Node | undefined;
    if (!s) throw new Error("not a libvirt snapshot XML document");
    const disks = ((((s.disks ?? {}) as Node).disk as Node[] | undefined) ?? []).map((n): SnapshotDisk => {
        const network = attr(n, "type") === "network" ? networkSourceOf(n.source) : undefined;
        return {
            name: attr(n, "name") ?? "",
            snapshot: attr(n, "snapshot") ?? "",
            type: attr(n, "type"),
            driverType: attr(n.driver, "type"),
            file: sourcePath(n.source) ?? attr(n, "file"),
            ...(network ? { network } : {}),
        };
    });
    return {
        name: text(s.name) ?? "",
        description: text(s.description),
        state: text(s.state) ?? "",
        creationTime: Number(text(s.creationTime) ?? 0),
        parent: text((s.parent as Node | undefined)?.name),
        memory: { snapshot: attr(s.memory, "snapshot") ?? "no", file: attr(s.memory, "file") },
        disks,
        domain: s.domain ? domainFromNode(s.domain as Node) : undefined,
    };
}

export interface SnapshotSpec {
    name: string;
    description?: string;
    memory: { snapshot: "no" | "internal" | "external"; file?: string };
    disks: Array<{ name: string; snapshot: "internal" | "external" | "no"; file?: string; driverType?: string }>;
}

export function buildSnapshotXml(spec: SnapshotSpec): string {
    const doc: Node = {
        name: spec.name,
        ...(spec.description !== undefined ? { description: spec.description } : {}),
        memory: { "@snapshot": spec.memory.snapshot, ...(spec.memory.file ? { "@file": spec.memory.file } : {}) },
    };
    if (spec.disks.length > 0) {
        doc.disks = {
            disk: spec.disks.map((d) => ({
                "@name": d.name,
                "@snapshot": d.snapshot,
                ...(d.driverType ? { driver: { "@type": d.driverType } } : {}),
                ...(d.file ? { source: { "@file": d.file } } : {}),
            })),
        };
    }
    return builder.build({ domainsnapshot: doc }) as string;
}

/**
 * Replace (or add, or with undefined remove) the top-level <description> of a
 * snapshot or checkpoint document, leaving everything else as libvirt wrote it.
 */
export function withDescription(xml: string, root: "domainsnapshot" | "domaincheckpoint", description: string | undefined): string {
    const doc = orderedParser.parse(xml) as Node[];
    const top = doc.find((n) => root in n) as Node | undefined;
    if (!top) throw new Error(`not a ${root} XML document`);
    const children = top[root] as Node[];
    const at = children.findIndex((n) => "description" in n);
    const node = { description: [{ "#text": description ?? "" }] };
    if (description === undefined) {
        if (at >= 0) children.splice(at, 1);
    } else if (at >= 0) children[at] = node;
    else {
        const nameAt = children.findIndex((n) => "name" in n);
        children.splice(nameAt + 1, 0, node);
    }
    return orderedBuilder.build(doc) as string;
}

/**
 * A snapshot's record for `snapshot-create --redefine`: what buildSnapshotXml
 * makes, plus the state, creation time and domain libvirt requires of a record.
 */
export function snapshotRecordXml(spec: SnapshotSpec, record: { state: string; creationTime: number; domainXml: string }): string {
    const doc = orderedParser.parse(buildSnapshotXml(spec)) as Node[];
    const top = doc.find((n) => "domainsnapshot" in n) as Node;
    const domain = (orderedParser.parse(record.domainXml) as Node[]).find((n) => "domain" in n);
    if (!domain) throw new Error("not a domain XML document");
    (top.domainsnapshot as Node[]).push(
        { state: [{ "#text": record.state }] },
        { creationTime: [{ "#text": String(record.creationTime) }] },
        domain,
    );
    return orderedBuilder.build(doc) as string;
}

// ---- checkpoint ---------------------------------------------------------------

// Its own parser, so a checkpoint's embedded <domain> always yields lists of
// disks and channels, even when there is only one.
const checkpointParser = new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: "@",
    parseTagValue: false,
    parseAttributeValue: false,
    trimValues: false,
    isArray: (_name, jpath) => CHECKPOINT_ARRAYS.has(String(jpath)),
});
const CHECKPOINT_ARRAYS = new Set([
    "domaincheckpoint.disks.disk",
    "domaincheckpoint.domain.devices.disk",
    "domaincheckpoint.domain.devices.channel",
]);

export interface CheckpointDisk {
    name: string;
    /** "bitmap" or "no". */
    checkpoint: string;
    bitmap?: string;
    /** Dirty bytes since the checkpoint; only with `checkpoint-dumpxml --size`, and only when libvirt could measure it. */
    size?: number;
}

export interface CheckpointInfo {
    name: string;
    description?: string;
    creationTime: number;
    parent?: string;
    disks: CheckpointDisk[];
    domain?: DomainInfo;
}

export function parseCheckpointXml(xml: string): CheckpointInfo {
    const c = (checkpointParser.parse(xml) as Node).domaincheckpoint as Node | undefined;
    if (!c) throw new Error("not a libvirt checkpoint XML document");
    const disks = ((((c.disks ?? {}) as Node).disk as Node[] | undefined) ?? []).map((n): CheckpointDisk => {
        const size = attr(n, "size");
        return {
            name: attr(n, "name") ?? "",
            checkpoint: attr(n, "checkpoint") ?? "bitmap",
            ...(attr(n, "bitmap") !== undefined ? { bitmap: attr(n, "bitmap") } : {}),
            ...(size !== undefined && /^\d+$/.test(size) ? { size: Number(size) } : {}),
        };
    });
    return {
        name: text(c.name) ?? "",
        description: text(c.description),
        creationTime: Number(text(c.creationTime) ?? 0),
        parent: text((c.parent as Node | undefined)?.name),
        disks,
        domain: c.domain ? domainFromNode(c.domain as Node) : undefined,
    };
}

export interface CheckpointSpec {
    name: string;
    description?: string;
    disks: Array<{ name: string; checkpoint: "bitmap" | "no"; bitmap?: string }>;
}

export function buildCheckpointXml(spec: CheckpointSpec): string {
    const doc: Node = {
        name: spec.name,
        ...(spec.description !== undefined ? { description: spec.description } : {}),
    };
    if (spec.disks.length > 0) {
        doc.disks = {
            disk: spec.disks.map((d) => ({
                "@name": d.name,
                "@checkpoint": d.checkpoint,
                ...(d.checkpoint === "bitmap" && d.bitmap ? { "@bitmap": d.bitmap } : {}),
            })),
        };
    }
    return builder.build({ domaincheckpoint: doc }) as string;
}

/**
 * Set (or with undefined remove) the <parent> of a checkpoint document, leaving
 * everything else as libvirt wrote it. Used when a lost record is redefined and
 * its recorded parent is gone for good.
 */
export function withCheckpointParent(xml: string, parent: string | undefined): string {
    return withMomentIdentity(xml, "domaincheckpoint", { parent });
}

/**
 * A kept snapshot or checkpoint document made fit for `--redefine` on the domain as it is now: the <parent>
 * set (or with undefined removed), and, with `uuid`, the <uuid> of its embedded <domain> replaced (libvirt
 * refuses a record whose domain has another UUID: the domain may have been defined again under a new one).
 * Everything else stays as libvirt wrote it.
 */
export function withMomentIdentity(
    xml: string,
    root: "domainsnapshot" | "domaincheckpoint",
    to: { parent: string | undefined; uuid?: string },
): string {
    const doc = orderedParser.parse(xml) as Node[];
    const top = doc.find((n) => root in n) as Node | undefined;
    if (!top) throw new Error(`not a ${root} XML document`);
    const children = top[root] as Node[];
    const at = children.findIndex((n) => "parent" in n);
    if (at >= 0) children.splice(at, 1);
    if (to.parent !== undefined) {
        const nameAt = children.findIndex((n) => "name" in n);
        children.splice(nameAt + 1, 0, { parent: [{ name: [{ "#text": to.parent }] }] });
    }
    // A running snapshot also keeps the persistent definition (<inactiveDomain>, libvirt 8.9 and newer), which a revert
    // makes the domain's own: an old UUID there leaves libvirt a domain listed by name that no UUID finds (measured on 9.0).
    for (const key of ["domain", "inactiveDomain"]) {
        const def = children.find((n) => key in n)?.[key] as Node[] | undefined;
        const uuid = def?.find((n) => "uuid" in n);
        if (to.uuid !== undefined && uuid) uuid.uuid = [{ "#text": to.uuid }];
    }
    return orderedBuilder.build(doc) as string;
}

// ---- backup -------------------------------------------------------------------

export interface BackupSpec {
    /** The checkpoint an incremental backup starts from; none for a full one. */
    incremental?: string;
    /** Every disk of the domain: backed up into a new qcow2 file, or left out. */
    disks: Array<{ name: string; file?: string }>;
}

/** A push-mode backup: libvirt (qemu) writes each disk into its target file. */
export function buildBackupXml(spec: BackupSpec): string {
    const doc: Node = {
        "@mode": "push",
        ...(spec.incremental !== undefined ? { incremental: spec.incremental } : {}),
        disks: {
            disk: spec.disks.map((d) =>
                d.file
                    ? { "@name": d.name, "@backup": "yes", "@type": "file", driver: { "@type": "qcow2" }, target: { "@file": d.file } }
                    : { "@name": d.name, "@backup": "no" },
            ),
        },
    };
    return builder.build({ domainbackup: doc }) as string;
}

export interface BackupJobXml {
    mode: string;
    incremental?: string;
    /** The disks being backed up and their target files. */
    disks: Array<{ name: string; file?: string }>;
}

const backupParser = new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: "@",
    parseTagValue: false,
    parseAttributeValue: false,
    trimValues: true,
    isArray: (_name, jpath) => String(jpath) === "domainbackup.disks.disk",
});

/** `virsh backup-dumpxml`: the running backup job's own description. */
export function parseBackupXml(xml: string): BackupJobXml {
    const b = (backupParser.parse(xml) as Node).domainbackup as Node | undefined;
    if (!b) throw new Error("not a libvirt backup XML document");
    const disks = ((((b.disks ?? {}) as Node).disk as Node[] | undefined) ?? [])
        .filter((n) => attr(n, "backup") !== "no")
        .map((n) => ({ name: attr(n, "name") ?? "", file: attr(n.target, "file") }));
    return { mode: attr(b, "mode") ?? "push", incremental: text(b.incremental), disks };
}
