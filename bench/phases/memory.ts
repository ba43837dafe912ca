// Memory: the dynamic-provider server's own floor, to set the fan-out's peakRssMB against.
// Run at the end of the fan-out phase, whose table row and figure it completes.
import { bareProvider } from "../../test/fixtures/echo-provider";
import { PARALLEL, TYPE } from "../config";
import { onCleanup } from "../lifecycle";
import { pool } from "../measure";
import { ProviderServer } from "../provider-server";
import type { BenchSshd } from "../sshd";

/**
 * The same Check and Create calls as the fan-out, 10 in flight, with inputs of the same
 * size, to a provider that does nothing (test/fixtures' bareProvider). Returns its VmHWM in kB.
 */
export async function serverFloorKb(sshd: BenchSshd, n: number): Promise<number> {
    const p = await ProviderServer.start(sshd, "noop");
    onCleanup(() => p.close());
    try {
        await pool(
            PARALLEL,
            Array.from({ length: n }, (_, i) => i),
            async (i) => {
                const urn = p.engine.urn(TYPE, `noop-${i}`);
                const inputs = await p.engine.programInputs(bareProvider, {
                    connection: p.connection,
                    domain: "d",
                    snapshotName: `noop-${i}`,
                });
                const c = await p.engine.check(urn, {}, inputs);
                await p.engine.create(urn, c.inputs);
            },
        );
        return p.status().hwmKb;
    } finally {
        await p.close();
    }
}
