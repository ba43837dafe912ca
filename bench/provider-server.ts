// The provider under test, as `pulumi up` runs it: DomainSnapshotProvider serialized by
// the SDK and served by @pulumi/pulumi's dynamic-provider server over gRPC, with an SSH
// connection to the benchmark's sshd. One instance is one server process.
import * as fs from "node:fs";
import * as path from "node:path";
import { DomainSnapshotProvider } from "pulumi-libvirt-snapshots";
import { EngineHarness, type Props } from "../test/harness/engine";
import { MEM_DIR, PROF_DIR, SERVER_CWD, TYPE, lab } from "./config";
import { memoryKb, now, type Trio } from "./measure";
import type { SshEndpoint } from "./sshd";

/** What the engine keeps of a created snapshot between RPCs. */
export interface State {
    urn: string;
    id: string;
    inputs: Props;
    outs: Props;
}

export class ProviderServer {
    private constructor(
        readonly engine: EngineHarness,
        readonly connection: Props,
        readonly label: string,
    ) {}

    /** label names the server's profile and log files. */
    static async start(sshd: Pick<SshEndpoint, "host" | "port"> & { hostKey?: string }, label: string): Promise<ProviderServer> {
        const env: Record<string, string> = {};
        if (process.env.BENCH_SERVER_NODE_OPTIONS) env.NODE_OPTIONS = process.env.BENCH_SERVER_NODE_OPTIONS;
        if (PROF_DIR) {
            // Node 20 refuses --cpu-prof in NODE_OPTIONS: a preload starts the profiler instead.
            env.NODE_OPTIONS =
                `${env.NODE_OPTIONS ?? process.env.NODE_OPTIONS ?? ""} --require ${path.join(__dirname, "cpuprof.js")}`.trim();
            env.BENCH_CPU_PROF = path.resolve(PROF_DIR);
        }
        if (MEM_DIR) {
            env.NODE_OPTIONS =
                `${env.NODE_OPTIONS ?? process.env.NODE_OPTIONS ?? ""} --require ${path.join(__dirname, "memprof.js")}`.trim();
            env.BENCH_MEM_PROF = path.resolve(MEM_DIR);
            for (const k of ["BENCH_MEM_ALLOC", "BENCH_MEM_TRACE_GC"]) if (process.env[k]) env[k] = process.env[k]!;
        }
        env.BENCH_PROFILE_LABEL = label;
        const engine = await EngineHarness.start({ cwd: SERVER_CWD, env, callTimeoutMs: 300_000 });
        const connection = {
            host: sshd.host,
            port: sshd.port,
            user: "root",
            privateKey: fs.readFileSync(lab.privateKeyPath, "utf8"),
            hostKey: sshd.hostKey ?? lab.hostKey,
        };
        return new ProviderServer(engine, connection, label);
    }

    /** The same connection through another loopback port (a proxy in front of the sshd): its own pooled SSH connection. */
    via(port: number): Props {
        return { ...this.connection, host: "127.0.0.1", port };
    }

    get pid(): number {
        return this.engine.pid;
    }

    /** Check, as the engine does before a create; returns the checked inputs. */
    async check(domain: string, snapshotName: string, connection: Props = this.connection): Promise<{ urn: string; inputs: Props }> {
        const urn = this.engine.urn(TYPE, snapshotName);
        const news = await this.engine.programInputs(DomainSnapshotProvider, { connection, domain, snapshotName });
        const r = await this.engine.check(urn, {}, news);
        if (r.failures.length) throw new Error(`check failed: ${JSON.stringify(r.failures)}`);
        return { urn, inputs: r.inputs };
    }

    async create(urn: string, inputs: Props): Promise<State> {
        const c = await this.engine.create(urn, inputs);
        if (!c.id) throw new Error(`create of ${urn} returned no id`);
        return { urn, id: c.id, inputs, outs: c.outs };
    }

    async read(s: State): Promise<State> {
        const r = await this.engine.read(s.urn, s.id, s.outs, { inputs: s.inputs });
        if (r.id !== s.id) throw new Error(`read of ${s.id} returned id '${r.id}'`);
        return { ...s, outs: r.props };
    }

    async delete(s: State): Promise<void> {
        await this.engine.delete(s.urn, s.id, s.outs, { oldInputs: s.inputs });
    }

    /** Check, then a timed create → read → delete; the check is not in total. */
    async trio(domain: string, name: string): Promise<Trio & { check: number }> {
        const t0 = now();
        const { urn, inputs } = await this.check(domain, name);
        const t1 = now();
        const s = await this.create(urn, inputs);
        const t2 = now();
        await this.read(s);
        const t3 = now();
        await this.delete(s);
        const t4 = now();
        return { check: t1 - t0, create: t2 - t1, read: t3 - t2, del: t4 - t3, total: t4 - t1 };
    }

    async close(): Promise<void> {
        await this.engine.close();
        const dir = process.env.BENCH_SERVER_LOG_DIR;
        if (dir) {
            fs.mkdirSync(dir, { recursive: true });
            fs.writeFileSync(path.join(dir, `${this.label}-${this.engine.pid}.log`), this.engine.logs());
        }
    }

    status(): { rssKb: number; hwmKb: number } {
        return memoryKb(this.engine.pid);
    }
}
