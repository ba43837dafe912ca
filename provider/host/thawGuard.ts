// Freezing a guest's filesystems (qemu-guest-agent, `virsh domfsfreeze`) for a
// short moment, with a guard on the host: before the freeze, a detached
// process there sleeps until a deadline and then thaws the guest. So a lost
// connection or a killed provider never leaves a guest frozen longer than
// that. A normal thaw cancels the guard. Every command goes through the runner.
import { randomBytes } from "node:crypto";
import { LibvirtError, messageOf } from "../errors";
import { hostFailure } from "../failures";
import { DEFAULT_FREEZE_LIMIT_SECONDS } from "../timing";
import type { Virsh } from "./virsh";

// Constant scripts; the values reach them as positional arguments, never spliced in.
// The guard: a background subshell sleeps, then execs the thaw command; its pid is printed.
const GUARD_SCRIPT = 'seconds=$1; shift; ( trap "" HUP; sleep "$seconds" && exec "$@" ) </dev/null >/dev/null 2>&1 & echo $!';
// Cancel: kill that pid only while it is still our guard (its command line holds our token).
const CANCEL_SCRIPT = 'if grep -qF -- "$2" "/proc/$1/cmdline" 2>/dev/null; then kill "$1"; fi';

export interface ThawGuard {
    /** The guard's process on the host. */
    readonly pid: number;
    /** Stop the guard (after a normal thaw). Never throws: a guard that fires later only thaws a thawed guest. */
    cancel(): Promise<void>;
}

/** Start the guard: `virsh domfsthaw DOMAIN` on the host after `seconds`, whatever happens to this process. */
export async function startThawGuard(virsh: Virsh, domain: string, seconds: number): Promise<ThawGuard> {
    const token = `libvirt-snapshots-thaw-guard-${randomBytes(8).toString("hex")}`;
    const thaw = virsh.argv(["domfsthaw", "--domain", domain]);
    // As the login user: the thaw inside brings its own sudo (virsh.argv), and sh/sleep need none.
    const r = await virsh.host(["sh", "-c", GUARD_SCRIPT, token, String(seconds), ...thaw], { asLoginUser: true });
    const pid = Number(r.stdout.trim());
    if (r.code !== 0 || !Number.isInteger(pid) || pid <= 0) {
        throw hostFailure(
            "failed",
            `cannot start the thaw guard on ${virsh.where}, so the guest was not frozen: ${r.stderr.trim() || `exit code ${r.code}`}`,
            r,
        );
    }
    return {
        pid,
        async cancel() {
            await virsh
                .host(["sh", "-c", CANCEL_SCRIPT, "cancel-thaw-guard", String(pid), token], { asLoginUser: true })
                .catch(() => undefined);
        },
    };
}

export interface FreezeResult<T> {
    result: T;
    /** From the freeze to the thaw. */
    frozenMilliseconds: number;
}

/**
 * Freeze the guest's filesystems, run `fn`, thaw, also when `fn` fails. The
 * guard is started first and cancelled after the thaw. A thaw that fails is
 * an error that says the guard will still thaw the guest by its deadline.
 */
export async function withFrozenGuest<T>(
    virsh: Virsh,
    domain: string,
    fn: () => Promise<T>,
    opts: { limitSeconds?: number } = {},
): Promise<FreezeResult<T>> {
    const limit = opts.limitSeconds ?? DEFAULT_FREEZE_LIMIT_SECONDS;
    const guard = await startThawGuard(virsh, domain, limit);
    let frozenAt: number;
    try {
        await virsh.run(["domfsfreeze", "--domain", domain]);
        frozenAt = Date.now();
    } catch (e) {
        // Not frozen (no agent, or it refused): nothing to thaw, but a half-done freeze is thawed anyway.
        await virsh.run(["domfsthaw", "--domain", domain]).catch(() => undefined);
        await guard.cancel();
        throw e;
    }
    let outcome: { ok: true; value: T } | { ok: false; error: unknown };
    try {
        outcome = { ok: true, value: await fn() };
    } catch (e) {
        outcome = { ok: false, error: e };
    }
    try {
        await virsh.run(["domfsthaw", "--domain", domain]);
    } catch (e) {
        const why =
            `the guest's filesystems could not be thawed (${messageOf(e).split("\n")[0]}); ` +
            `the guard on the host thaws them within ${limit} s of the freeze`;
        if (!outcome.ok) throw new LibvirtError("failed", `${messageOf(outcome.error)}\n  and ${why}`);
        throw new LibvirtError("failed", why);
    }
    const frozenMilliseconds = Date.now() - frozenAt;
    await guard.cancel();
    if (!outcome.ok) throw outcome.error;
    return { result: outcome.value, frozenMilliseconds };
}
