// A private folder on the libvirt host, for files a host command must read
// by path (virsh takes one XML document on its stdin, but some commands take
// two). `mktemp -d` makes it 0700, owned by the login user; a sudo'ed virsh
// (root) still reads it. Every command goes through the one runner.
import * as path from "node:path";
import type { LibvirtError } from "../errors";
import { hostFailure } from "../failures";
import type { HostResult, Virsh } from "./virsh";

const PREFIX = "libvirt-snapshots.";

export interface PrivateFolder {
    /** The folder's absolute path on the host. */
    readonly path: string;
    /** Write `text` to a file in the folder (a plain name, no '/'); returns its path on the host. */
    write(name: string, text: string): Promise<string>;
    /** Remove the folder and what is in it. */
    remove(): Promise<void>;
}

function failed(what: string, r: HostResult): LibvirtError {
    return hostFailure("failed", `${what} on the libvirt host: ${r.stderr.trim() || `exit code ${r.code}`}`, r);
}

export async function makePrivateFolder(virsh: Virsh): Promise<PrivateFolder> {
    const made = await virsh.host(["mktemp", "-d", "-t", `${PREFIX}XXXXXXXXXX`], { asLoginUser: true });
    const dir = made.stdout.trim();
    if (made.code !== 0 || !path.posix.isAbsolute(dir) || !path.posix.basename(dir).startsWith(PREFIX))
        throw failed("cannot make a private folder", made);
    return {
        path: dir,
        async write(name, text) {
            if (!/^[A-Za-z0-9._-]+$/.test(name) || name.startsWith(".")) throw new Error(`not a plain file name: ${name}`);
            const file = path.posix.join(dir, name);
            // dd writes its stdin to the file: no shell, and the folder keeps it private.
            const r = await virsh.host(["dd", `of=${file}`, "status=none"], { asLoginUser: true, stdin: text });
            if (r.code !== 0) throw failed(`cannot write ${file}`, r);
            return file;
        },
        async remove() {
            const r = await virsh.host(["rm", "-rf", "--", dir], { asLoginUser: true });
            if (r.code !== 0) throw failed(`cannot remove the private folder ${dir}`, r);
        },
    };
}

/** Run `fn` with a fresh private folder that is removed afterwards, whatever happens. */
export async function withPrivateFolder<T>(virsh: Virsh, fn: (folder: PrivateFolder) => Promise<T>): Promise<T> {
    const folder = await makePrivateFolder(virsh);
    try {
        return await fn(folder);
    } finally {
        await folder.remove().catch(() => undefined);
    }
}
