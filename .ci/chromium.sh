# Find Debian's chromium for the console's browser test and export COVAULT_TEST_CHROMIUM (the
# test then must run: it fails, not skips, if that browser is not there). Sourced by .ci/run.
# As root (CI) it installs Debian's chromium package when the browser is absent; otherwise it
# uses the browser that exists, or says why the test will skip. Playwright drives this browser:
# it never downloads one of its own.

covault_chromium_find() { command -v chromium 2>/dev/null || true; }

covault_chromium_setup() {
    local bin
    bin=$(covault_chromium_find)
    if [ -z "$bin" ]; then
        if [ "$(id -u)" = 0 ]; then
            apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
            bin=$(covault_chromium_find)
        fi
        if [ -z "$bin" ]; then
            echo "chromium.sh: no chromium browser; the console's browser test skips" >&2
            return 0
        fi
    fi
    export COVAULT_TEST_CHROMIUM="$bin"
    echo "chromium.sh: $("$bin" --version 2>/dev/null || echo chromium) at $bin" >&2
}

covault_chromium_setup
