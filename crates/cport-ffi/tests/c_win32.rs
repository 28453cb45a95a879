//! The Win32 companion's C tests (`tests/c/win32.c`, which includes
//! `win32_io.c`): threads, events, waits, locks, memory, `OVERLAPPED.hEvent`
//! and the console handler (in child processes it starts), on both
//! backends.

mod common;

use common::*;

#[test]
fn c_win32_tests_pass_on_both_backends() {
    c_tests_pass("crates/cport-ffi/tests/c/win32.c", 18);
}

/// `cport.h` without the companion (`CPORT_NO_WIN32`) leaves room for a
/// program's own Win32 layer: none of the companion's names is declared.
#[test]
fn cport_no_win32_leaves_the_companion_out() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("own_layer.c");
    std::fs::write(
        &src,
        "#define CPORT_NO_WIN32\n#include <cport.h>\n\
         typedef struct { int mine; } CRITICAL_SECTION;\n\
         static long InterlockedIncrement(long *p) { return ++*p; }\n\
         void CreateThread(void) {}\n\
         int main(void) { CRITICAL_SECTION c = {0}; long n = 0;\n\
         HANDLE p = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 0);\n\
         CreateThread(); return (int)InterlockedIncrement(&n) - 1 + c.mine + !p; }\n",
    )
    .unwrap();
    let bin = dir.path().join("own_layer");
    compile(&src, &bin, &direct_flags());
    for backend in BACKENDS {
        let o = run(&bin, &[], backend);
        assert!(o.status.success(), "own-layer program on {backend}: {o:?}");
    }
}

/// What a Windows program gets from `<windows.h>` beyond the API and finds
/// in `cport.h` alone: `<stdarg.h>` and `<ctype.h>` (Microsoft's winsock
/// IOCP samples format their output with `va_start` and parse options with
/// `tolower` without including either), MSVC's `__cdecl`/`__stdcall`
/// (`void __cdecl main`), and `lstrlen`, which takes `NULL`. Built as C
/// and as C++.
#[test]
fn cport_h_brings_what_windows_h_brings() {
    let dir = tempfile::tempdir().unwrap();
    let body = "#include <cport.h>\n\
        static int __cdecl sum(int n, ...) { va_list ap; int s = 0; va_start(ap, n);\n\
        for (int i = 0; i < n; i++) { s += va_arg(ap, int); }\n\
        va_end(ap); return s; }\n\
        static DWORD __stdcall five(void) { return 5; }\n\
        int __cdecl main(void) {\n\
        if (sum(3, 1, 2, 3) != 6) return 1;\n\
        if (tolower('E') != 'e' || !isdigit('7')) return 2;\n\
        if (lstrlen(\"abc\") != 3 || lstrlenA(NULL) != 0 || lstrlen(\"\") != 0) return 3;\n\
        return five() == 5 ? 0 : 4; }\n";
    for ext in ["c", "cpp"] {
        let src = dir.path().join(format!("windows_h.{ext}"));
        std::fs::write(&src, body).unwrap();
        let bin = dir.path().join(format!("windows_h_{ext}"));
        compile(&src, &bin, &direct_flags());
        let o = run(&bin, &[], BACKENDS[0]);
        assert!(o.status.success(), "windows_h.{ext}: {o:?}");
    }
}
