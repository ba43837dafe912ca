// The diagnostics channels (provider/host/diagnostics.ts): what a subscriber gets, and that a connection's secrets
// never reach it, whatever command or line they turn up in.
import * as assert from "node:assert/strict";
import {
    CHANNELS,
    publishExec,
    publishSessionAnswer,
    publishSessionLine,
    publishShellLine,
    publishSpawn,
} from "../../provider/host/diagnostics";
import { LocalTransport } from "../../provider/host/transport";
import { commandLog } from "../support/commandLog";

const PASSWORD = "s3cret-Passw0rd";
const KEY_LINE = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ";
const from = { description: "deploy@kvm1:22 (qemu:///system)", secrets: [PASSWORD, `-----BEGIN KEY-----\n${KEY_LINE}\n-----END KEY-----`] };

describe("diagnostics channels", () => {
    it("are named in one place", () => {
        assert.deepEqual(Object.values(CHANNELS), [
            "pulumi-libvirt-snapshots:command",
            "pulumi-libvirt-snapshots:ssh",
            "pulumi-libvirt-snapshots:session",
        ]);
    });

    it("build nothing while nobody listens to commands: a connection's secrets are not even read", () => {
        let reads = 0;
        const spy = {
            description: "spy",
            get secrets() {
                reads++;
                return [PASSWORD];
            },
        };
        publishExec(spy, ["true"], "stdin");
        publishSpawn(spy, ["sh"]);
        publishSessionLine(spy, ["virsh"], ["domstate"], "domstate\n");
        publishShellLine(spy, "exit", undefined, "exit\n");
        assert.equal(reads, 0);
    });

    it("publish every kind of command with its fields, secrets replaced wherever they turn up", () => {
        const log = commandLog({ keep: true });
        try {
            const session = ["env", "LC_ALL=C", "virsh", "-c", `qemu+ssh://deploy:${PASSWORD}@kvm1/system`];
            const description = `it's ${PASSWORD} and 'quoted ${PASSWORD}'`;
            publishExec(from, ["env", "LC_ALL=C", "virsh", "snapshot-create-as", "--description", description], `<x>${KEY_LINE}</x>`);
            publishSpawn(from, session);
            publishSessionLine(from, session, ["snapshot-info", "--snapshotname", PASSWORD], `echo ; snapshot-info ${PASSWORD}\n`);
            publishShellLine(from, "write-file", undefined, `n=1; <<'X'\n${KEY_LINE}\nX\n`);
            publishShellLine(from, "run", ["df", "--", `/srv/${PASSWORD}`], `{ df -- /srv/${PASSWORD} </dev/null\n}`);
            const masked = `it's *** and 'quoted ***'`;
            assert.deepEqual(log.commands, [
                {
                    kind: "exec",
                    host: from.description,
                    argv: ["env", "LC_ALL=C", "virsh", "snapshot-create-as", "--description", masked],
                    stdin: "<x>***</x>",
                },
                { kind: "spawn", host: from.description, argv: ["env", "LC_ALL=C", "virsh", "-c", "qemu+ssh://deploy:***@kvm1/system"] },
                {
                    kind: "session-line",
                    host: from.description,
                    session: ["env", "LC_ALL=C", "virsh", "-c", "qemu+ssh://deploy:***@kvm1/system"],
                    argv: ["snapshot-info", "--snapshotname", "***"],
                    line: "echo ; snapshot-info ***\n",
                },
                { kind: "shell-line", host: from.description, op: "write-file", line: "n=1; <<'X'\n***\nX\n" },
                {
                    kind: "shell-line",
                    host: from.description,
                    op: "run",
                    argv: ["df", "--", "/srv/***"],
                    line: "{ df -- /srv/*** </dev/null\n}",
                },
            ]);
            assert.ok(!JSON.stringify(log.commands).includes(PASSWORD) && !JSON.stringify(log.commands).includes(KEY_LINE));
        } finally {
            log.stop();
        }
    });

    it("count sessions' answers, reads apart from writes; stop ends the listening", () => {
        const log = commandLog();
        publishSessionAnswer(from, ["virsh"], ["domstate"], false);
        publishSessionAnswer(from, ["virsh"], ["snapshot-delete"], true);
        publishSessionAnswer(from, ["virsh"], ["snapshot-delete"], true);
        log.stop();
        publishSessionAnswer(from, ["virsh"], ["domstate"], false);
        assert.deepEqual(log.counts, { sessionCommands: 1, sessionWrites: 2, sessionsStarted: 0, channels: 0, handshakes: 0 });
        assert.deepEqual(log.commands, [], "a log that doesn't keep commands doesn't listen to them");
    });

    it("see a process this machine runs, through the local transport, as it was run", async () => {
        const log = commandLog({ keep: true });
        try {
            const r = await new LocalTransport().exec(["env", "LC_ALL=C", "cat"], { timeoutMs: 10_000, stdin: "it's me\n" });
            assert.equal(r.stdout, "it's me\n");
            assert.deepEqual(log.commands, [{ kind: "exec", host: "local host", argv: ["env", "LC_ALL=C", "cat"], stdin: "it's me\n" }]);
        } finally {
            log.stop();
        }
    });
});
