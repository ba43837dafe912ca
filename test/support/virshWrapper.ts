// A virsh wrapper a suite puts between the provider and the lab host's real virsh,
// to log what the provider asked of it. On this machine's own host the wrapper goes
// first on the provider server's PATH. A host in its own root is reached over SSH,
// where no PATH of ours applies: there the root's /usr/local/bin/virsh is a
// dispatcher that runs a suite's wrapper when the URI after `-c` ends in that
// suite's tag as its fragment (libvirt ignores a URI's fragment), and the real
// virsh for everything else, so other test runs on that host are untouched. The
// lab's sudoers rule names both paths (scripts/lab/host13.sh).
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { loadLab, type LabInfo } from "./lab";
import { stackConfigFor } from "./fixture";

const DISPATCHER_PATH = "/usr/local/bin/virsh";
const TAG_MARK = "#plvwrap-";

function dispatcher(wrapperRoot: string): string {
    return `#!/bin/sh
# Installed by the lab's tests (test/support/virshWrapper.ts). A libvirt URI ending in
# ${TAG_MARK}TAG runs that test run's wrapper; anything else runs the real virsh.
if [ "$1" = "-c" ]; then
  case "$2" in
    *'${TAG_MARK}'*)
      tag=\${2##*${TAG_MARK}}
      case "$tag" in
        '' | *[!0-9a-f]*) ;;
        *) [ -x '${wrapperRoot}'/"$tag"/virsh ] && exec '${wrapperRoot}'/"$tag"/virsh "$@" ;;
      esac
      ;;
  esac
fi
exec /usr/bin/virsh "$@"
`;
}

export interface VirshWrapper {
    /** A folder for the wrapper's logs: the same path on this machine and on the host. */
    readonly dir: string;
    /** The URI the provider passes to `virsh -c`. */
    readonly uri: string;
    /** Environment and stack config for the provider server, so its virsh calls go through the wrapper. */
    readonly server: { env: Record<string, string>; config: Record<string, string>; secretConfig: Record<string, string> };
    dispose(): void;
}

/** Shell-quote a plain path for the wrapper's text. */
const sq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * Installs a wrapper whose text is `script(dir)`, with `dir` quoted for the shell: a script that runs `/usr/bin/virsh "$@"`
 * (on the host) and writes what it logs under `dir`.
 */
export function installVirshWrapper(script: (dir: string) => string, lab: LabInfo = loadLab()): VirshWrapper {
    const tag = crypto.randomBytes(6).toString("hex");
    const wrapperRoot = path.join(lab.labDir, "virsh-wrappers");
    const base = path.join(wrapperRoot, tag);
    const dir = path.join(base, "log");
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(base, "virsh"), script(sq(dir)), { mode: 0o755 });
    const stack = stackConfigFor(lab);
    if (!lab.rootDir) {
        fs.mkdirSync(path.join(base, "bin"));
        fs.symlinkSync(path.join(base, "virsh"), path.join(base, "bin", "virsh"));
        return {
            dir,
            uri: lab.libvirtUri,
            server: { env: { PATH: `${path.join(base, "bin")}:${process.env.PATH ?? "/usr/bin:/bin"}` }, ...stack },
            dispose: () => fs.rmSync(base, { recursive: true, force: true }),
        };
    }
    // The dispatcher stays installed: it is transparent for every URI without a tag.
    const target = path.join(lab.rootDir, DISPATCHER_PATH);
    const text = dispatcher(wrapperRoot);
    if (!fs.existsSync(target) || fs.readFileSync(target, "utf8") !== text) {
        fs.writeFileSync(`${target}.new`, text, { mode: 0o755 });
        fs.renameSync(`${target}.new`, target);
    }
    const uri = `${lab.libvirtUri}${TAG_MARK}${tag}`;
    return {
        dir,
        uri,
        server: { env: {}, config: { ...stack.config, "libvirt-snapshots:libvirtUri": uri }, secretConfig: stack.secretConfig },
        dispose: () => fs.rmSync(base, { recursive: true, force: true }),
    };
}
