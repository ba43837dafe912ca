// A corpus of hostile strings for the input-safety suite (test/hostile.test.ts).
// Every entry that could run a command if some layer handed it to a shell
// carries a canary: a file that appears only if that happened. Absolute
// canaries live in a fresh temporary folder; relative ones (for entries that
// must stay valid snapshot names, which can't contain '/') are created in
// whatever the shell's working directory is, so the suite looks for them in
// every folder a shell could start in.

export interface HostileEntry {
    /** Stable short id, e.g. "shell-03"; used in reports and resource names. */
    id: string;
    /** What the entry tries. */
    label: string;
    value: string;
    /** Files that must never appear (absolute, or a bare name: looked up in the folders a shell may start in). */
    canaries: string[];
}

export interface CorpusContext {
    /** An empty folder of our own for absolute canaries. */
    canaryDir: string;
    /** A random token, so relative canaries from another run can't be mistaken for ours. */
    token: string;
    /** The id of a running throwaway domain: a name made of its digits is a trap for virsh's id lookup. */
    runningDomainId: number;
}

/** Bare canary file names start with this, followed by the run's token. */
export const RELATIVE_CANARY_PREFIX = "hcanary-";

export function hostileCorpus(ctx: CorpusContext): HostileEntry[] {
    const out: HostileEntry[] = [];
    let n = 0;
    const abs = () => `${ctx.canaryDir}/c${++n}`;
    const rel = () => `${RELATIVE_CANARY_PREFIX}${ctx.token}-${++n}`;
    const add = (group: string, label: string, value: string, canaries: string[] = []) => {
        const id = `${group}-${String(out.filter((e) => e.id.startsWith(`${group}-`)).length + 1).padStart(2, "0")}`;
        out.push({ id, label, value, canaries });
    };
    const shell = (label: string, make: (c: string) => string, kind: "abs" | "rel") => {
        const c = kind === "abs" ? abs() : rel();
        add("shell", label, make(c), [c]);
    };

    // ---- shell metacharacters, each with a canary -------------------------------
    shell("command substitution $()", (c) => `$(touch ${c})`, "abs");
    shell("command substitution, backticks", (c) => `\`touch ${c}\``, "abs");
    shell("command separator ;", (c) => `x; touch ${c}`, "abs");
    shell("pipe |", (c) => `x | touch ${c}`, "abs");
    shell("background &", (c) => `x & touch ${c} &`, "abs");
    shell("and-list &&", (c) => `true && touch ${c}`, "abs");
    shell("or-list ||", (c) => `false || touch ${c}`, "abs");
    shell("redirection >", (c) => `x > ${c}`, "abs");
    shell("redirection >>", (c) => `x >> ${c}`, "abs");
    shell("redirection 2> and <", (c) => `x 2>${c} </etc/hostname`, "abs");
    shell("newline then a command", (c) => `x\ntouch ${c}`, "abs");
    shell("$() as a valid snapshot name", (c) => `$(touch ${c})`, "rel");
    shell("backticks as a valid snapshot name", (c) => `\`touch ${c}\``, "rel");
    shell("; as a valid snapshot name", (c) => `snap;touch ${c};`, "rel");
    shell("| as a valid snapshot name", (c) => `snap|tee ${c}`, "rel");
    shell("&& as a valid snapshot name", (c) => `snap&&touch ${c}`, "rel");
    shell("> as a valid snapshot name", (c) => `snap>${c}`, "rel");
    shell("${IFS} instead of spaces", (c) => `snap;touch\${IFS}${c}`, "rel");
    shell("single-quote breakout", (c) => `'; touch ${c}; echo '`, "rel");
    shell("double-quote breakout", (c) => `"; touch ${c}; echo "`, "rel");
    shell("backslash then single-quote breakout", (c) => `\\'; touch ${c}; #`, "rel");
    shell("quoted $() inside single quotes", (c) => `'$(touch ${c})'`, "rel");
    shell("eval-style $'...' quoting", (c) => `$'\\x3b'touch ${c}`, "rel");
    add("shell", "arithmetic expansion", "$((6*7))");
    add("shell", "variable expansion", "${HOME}$PATH");
    add("shell", "globs", "*?[a-z]*");
    add("shell", "brace expansion, tilde, history, comment", "{a,b}~root!!#x");

    // ---- quotes and backslashes -----------------------------------------------
    add("quote", "single quote", "'");
    add("quote", "double quote", '"');
    add("quote", "backtick", "`");
    add("quote", "apostrophe inside a word", "it's a snapshot");
    add("quote", "unicode quotes", "\u201csmart\u201d \u2018quotes\u2019 \u00abguillemets\u00bb \u201elow\u201c \u2039x\u203a");
    add("quote", "backslash", "\\");
    add("quote", "double backslash", "a\\\\b");
    add("quote", "backslash-n, literally", "a\\nb");
    add("quote", "mixed quotes", `'"\`'"\``);

    // ---- whitespace and control characters ------------------------------------------
    add("ctrl", "newline", "a\nb");
    add("ctrl", "CR LF", "a\r\nb");
    add("ctrl", "CR", "a\rb");
    add("ctrl", "tab", "a\tb");
    add("ctrl", "NUL", "a\u0000b");
    add("ctrl", "terminal escape sequence", "\u0007bell\u001b[31mred\u001b[0m");
    add("ctrl", "DEL", "a\u007fb");
    add("ctrl", "leading space", " leading");
    add("ctrl", "trailing space", "trailing ");
    add("ctrl", "only a space", " ");
    add("ctrl", "empty", "");

    // ---- dashes: options in disguise --------------------------------------------------
    add("dash", "a single dash", "-");
    add("dash", "end of options", "--");
    add("dash", "--metadata (would keep the qcow2 data on delete)", "--metadata");
    add("dash", "--children", "--children");
    add("dash", "-c qemu:///session (another hypervisor)", "-c qemu:///session");
    add("dash", "--domain=another", "--domain=lab-off");
    add("dash", "-h", "-h");
    add("dash", "option after a word", "x --metadata");
    add("dash", "option after a space", " --metadata");

    // ---- length ---------------------------------------------------------------------
    add("long", "247 bytes (the longest valid name)", "n".repeat(247));
    add("long", "248 bytes", "n".repeat(248));
    add("long", "300 bytes", "L".repeat(300));
    add("long", "5000 bytes", "X".repeat(5000));
    add("long", "400 bytes of two-byte characters", "\u00e9".repeat(200));

    // ---- unicode ----------------------------------------------------------------------
    add("uni", "right-to-left override", "\u202eexe.txt\u202c");
    add("uni", "right-to-left and left-to-right marks, zero-width space", "a\u200fb\u200ec\u200bd");
    add("uni", "CJK", "\u540d\u524d \u30b9\u30ca\u30c3\u30d7");
    add("uni", "emoji (astral plane)", "\u{1F680}\u{1F4A5}");
    add("uni", "lone high surrogate (not valid unicode)", "a\ud800b");
    add("uni", "lone low surrogate (not valid unicode)", "a\udc00b");
    add("uni", "lone high surrogate at the end", "snap\ud83d");
    add("uni", "line separator U+2028 and NEL U+0085", "a\u2028b\u0085c");
    add("uni", "byte order mark", "\ufeffbom");
    add("uni", "noncharacter U+FFFF", "a\uffffb");
    add("uni", "combining accent", "e\u0301\u0301\u0301");
    add("uni", "fullwidth solidus and semicolon", "a\uff0fb\uff1bc");

    // ---- paths --------------------------------------------------------------------------
    add("path", "path traversal", "../../etc/passwd");
    add("path", "traversal inside an absolute path", "/var/lib/../../etc/passwd");
    add("path", "dot segment", "/var/lib/libvirt/./x");
    add("path", "double slash", "//etc/passwd");
    add("path", "a directory", "/tmp/");
    add("path", "dot", ".");
    add("path", "dot dot", "..");
    add("path", "home", "~/.ssh/authorized_keys");
    add("path", "url-encoded traversal", "%2e%2e%2f%2e%2e%2fetc%2fpasswd");
    add("path", "qemu protocol prefix", 'json:{"driver":"file","filename":"/etc/passwd"}');
    add("path", "comma (qemu option separator)", "a,b=c,file=x");
    add("path", "colon", "nbd:127.0.0.1:1");

    // ---- XML --------------------------------------------------------------------------
    add("xml", "less-than", "<");
    add("xml", "ampersand", "&");
    add("xml", "CDATA end", "]]>");
    add("xml", "CDATA section", "<![CDATA[x]]>");
    add("xml", "entity references", "&amp;&lt;&#x41;&xxe;");
    add("xml", "element injection", "</name><memory snapshot='external' file='/tmp/x'/>");
    const xmlCanary = abs();
    add("xml", "element injection with a canary file", `</description><memory snapshot='external' file='${xmlCanary}'/><description>`, [
        xmlCanary,
    ]);
    add("xml", "external entity", '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>&e;');
    add("xml", "attribute breakout, single quote", "x' file='/tmp/x");
    add("xml", "attribute breakout, double quote", 'x" file="/tmp/x');
    add("xml", "comment", "<!-- x -->");
    add("xml", "processing instruction", "<?xml version='1.0'?>");

    // ---- formats and ids ------------------------------------------------------------------
    add("misc", "printf format", "%s%n%x%%");
    add("misc", "template", "{{ .Name }}");
    add("misc", "a running domain's id", String(ctx.runningDomainId));
    add("misc", "a running domain's id with a plus", `+${ctx.runningDomainId}`);
    add("misc", "a running domain's id with a leading space", ` ${ctx.runningDomainId}`);
    add("misc", "a running domain's id with a leading zero", `0${ctx.runningDomainId}`);
    add("misc", "Pulumi secret signature", "1b47061264138c4ac30d75fd1eb44270");

    return out;
}
