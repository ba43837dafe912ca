// Scale: create → read → delete on domains that already hold 1, 50 and 200 snapshots,
// provider against local virsh, to show how each grows with the count.
import { localTrio } from "../baselines";
import { SCALE_COUNTS, SCALE_ITER, WARMUP } from "../config";
import { fillSnapshots, newDomain } from "../domains";
import { log, onCleanup } from "../lifecycle";
import { median, ms, r1, r2 } from "../measure";
import { ProviderServer } from "../provider-server";
import { results, row } from "../report";
import { spread } from "./per-op";
import type { BenchSshd } from "../sshd";

export async function scale(sshd: BenchSshd): Promise<void> {
    log(
        `scale: per-operation time with ${SCALE_COUNTS.join(", ")} existing snapshots (one domain each, interleaved), ${SCALE_ITER} iterations`,
    );
    // One domain per count, measured in turn, so that every count sees the same load on this shared machine.
    const doms = await Promise.all(SCALE_COUNTS.map(() => newDomain("labtmp-bench-scale-")));
    const provider = await ProviderServer.start(sshd, "scale");
    onCleanup(() => provider.close());
    await Promise.all(
        doms.map(async (d, k) => {
            // Warm the disk (its first snapshots grow the qcow2 file), then fill it.
            for (let i = 0; i < 2; i++) await localTrio(d.uuid, `warm-${i}`);
            await fillSnapshots(d, 0, SCALE_COUNTS[k]!);
        }),
    );
    for (let i = 0; i < WARMUP; i++) await provider.trio(doms[0]!.name, `warm-p-${i}`);
    const L: number[][] = SCALE_COUNTS.map(() => []),
        P: number[][] = SCALE_COUNTS.map(() => []);
    for (let i = 0; i < SCALE_ITER; i++) {
        for (let j = 0; j < SCALE_COUNTS.length; j++) {
            const k = (i + j) % SCALE_COUNTS.length,
                d = doms[k]!,
                name = `scale-${i}`;
            if ((i + j) % 2) {
                L[k]!.push((await localTrio(d.uuid, name)).total);
                P[k]!.push((await provider.trio(d.name, name)).total);
            } else {
                P[k]!.push((await provider.trio(d.name, name)).total);
                L[k]!.push((await localTrio(d.uuid, name)).total);
            }
        }
    }
    await provider.close();
    const perCount = SCALE_COUNTS.map((_, k) => ({ local: median(L[k]!), provider: median(P[k]!) }));
    const first = perCount[0]!,
        last = perCount[perCount.length - 1]!;
    row(`scale (create+read+delete, median of ${SCALE_ITER})`, "existing", "local virsh", "provider");
    SCALE_COUNTS.forEach((n, k) => row("", String(n), ms(perCount[k]!.local), ms(perCount[k]!.provider)));
    row(
        `  growth ${SCALE_COUNTS[SCALE_COUNTS.length - 1]}/${SCALE_COUNTS[0]}`,
        "",
        r2(last.local / first.local).toFixed(2),
        r2(last.provider / first.provider).toFixed(2),
    );
    row(
        `  growth ${SCALE_COUNTS[SCALE_COUNTS.length - 1]} - ${SCALE_COUNTS[0]}`,
        "",
        `+${ms(last.local - first.local)}`,
        `+${ms(last.provider - first.provider)}`,
    );
    // Paired: each iteration's provider growth t(200)/t(1) over local virsh's in the same iteration.
    const top = SCALE_COUNTS.length - 1;
    const vsLibvirt = spread(P[0]!.map((p1, i) => P[top]![i]! / p1 / (L[top]![i]! / L[0]![i]!)));
    row(
        `  scaleGrowthVsLibvirt, median of ${SCALE_ITER} paired (min, max)`,
        "",
        "",
        `${r2(vsLibvirt.med).toFixed(2)} (${r2(vsLibvirt.min).toFixed(2)}, ${r2(vsLibvirt.max).toFixed(2)})`,
    );
    Object.assign(results, {
        scaleGrowthVsLibvirt: r2(vsLibvirt.med),
        scaleGrowthVsLibvirtMin: r2(vsLibvirt.min),
        scaleGrowthVsLibvirtMax: r2(vsLibvirt.max),
        scaleRatio200: r2(last.provider / first.provider),
        localScaleRatio200: r2(last.local / first.local),
        scaleGrowth200Ms: { local: r1(last.local - first.local), provider: r1(last.provider - first.provider) },
        scaleMs: Object.fromEntries(
            SCALE_COUNTS.map((n, k) => [n, { local: r1(perCount[k]!.local), provider: r1(perCount[k]!.provider) }]),
        ),
    });
}
