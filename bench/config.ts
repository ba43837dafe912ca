// The benchmark's settings: the env variables listed in the header of bench.ts, the
// fixed sizes of each phase, and the lab it runs against.
import { PACKAGE_ROOT, dynamicType } from "../test/harness/engine";
import { loadLab, type LabInfo } from "../test/support/lab";

export const TYPE = dynamicType("libvirt-snapshots", "DomainSnapshot");
/** BENCH_QUICK=1: fewer iterations and rounds everywhere, to try a change (figures too noisy to quote). */
export const QUICK = process.env.BENCH_QUICK === "1";
export const ITER = Number(process.env.BENCH_ITER ?? (QUICK ? 6 : 30));
export const WARMUP = QUICK ? 1 : 3;
export const SCALE_ITER = Number(process.env.BENCH_SCALE_ITER ?? (QUICK ? 4 : 15));
export const SCALE_COUNTS = [1, 50, 200];
export const FANOUT_DOMAINS = 5,
    FANOUT_SNAPSHOTS = 50,
    PARALLEL = 10,
    REFRESH_COUNT = 100;
/** The round trip the delay proxy adds in the per-operation phase (issue 14: 25 ms). */
export const RTT_MS = Number(process.env.BENCH_RTT_MS ?? 25);
export const FANOUT_ROUNDS = Number(process.env.BENCH_FANOUT_ROUNDS ?? (QUICK ? 1 : 3));
/** The hosts50 phase: SSH endpoints, shut-off domains behind each, and its rounds. */
export const HOSTS = Number(process.env.BENCH_HOSTS ?? 50),
    DOMAINS_PER_HOST = 2,
    HOSTS_ROUNDS = Number(process.env.BENCH_HOSTS_ROUNDS ?? (QUICK ? 1 : 3));
/** The CLI phase: DomainSnapshots per `pulumi up` (spread over fresh qcow2 domains of every lab host), and its rounds. */
export const CLI_SNAPSHOTS = 20,
    CLI_ROUNDS = Number(process.env.BENCH_CLI_ROUNDS ?? (QUICK ? 1 : 3));
export const SKIP = new Set((process.env.BENCH_SKIP ?? "").split(",").filter(Boolean));
export const PROF_DIR = process.env.BENCH_CPU_PROF;
export const MEM_DIR = process.env.BENCH_MEM_PROF;
export const VIRSH = "/usr/bin/virsh";
/** Where the provider server runs from, and so which build of the provider it loads. */
export const SERVER_CWD = process.env.BENCH_PACKAGE_ROOT ?? PACKAGE_ROOT;

// BENCH_HOST picks the lab host as LAB_HOST does for the tests (default: debian12, this machine).
if (process.env.BENCH_HOST) process.env.LAB_HOST = process.env.BENCH_HOST;
export const lab: LabInfo = loadLab();
export const URI = lab.libvirtUri;
