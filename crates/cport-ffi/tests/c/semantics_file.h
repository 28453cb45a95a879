/*
 * semantics.c, part 3: file APIs on CreateFileA handles (size, pointer,
 * end of file, flush, type, delete, template, cport_fd).
 * Included once, by semantics.c.
 */

static HANDLE open_rw(const char *path, DWORD disposition) {
    return CreateFileA(path, GENERIC_READ | GENERIC_WRITE, FILE_SHARE_READ, NULL, disposition,
                       FILE_ATTRIBUTE_NORMAL, NULL);
}

static void file_size_and_pointer(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/size", g_dir);
    HANDLE f = open_rw(path, CREATE_ALWAYS);
    DWORD high = 77, n = 0;
    LARGE_INTEGER li, pos;
    char buf[16] = {0};
    CHECK(f != INVALID_HANDLE_VALUE, "CreateFileA: %u", GetLastError());
    CHECK(GetFileSize(f, &high) == 0 && high == 0 && GetLastError() == NO_ERROR, "empty size");
    CHECK(WriteFile(f, "0123456789", 10, &n, NULL) && n == 10, "write");
    /* The file pointer moved with the synchronous write. */
    CHECK(SetFilePointer(f, 0, NULL, FILE_CURRENT) == 10, "pointer after write");
    CHECK(GetFileSize(f, NULL) == 10, "size 10");
    CHECK(GetFileSizeEx(f, &li) && li.QuadPart == 10, "GetFileSizeEx");
    CHECK(SetFilePointer(f, -4, NULL, FILE_END) == 6, "FILE_END - 4");
    CHECK(ReadFile(f, buf, sizeof buf, &n, NULL) && n == 4 && memcmp(buf, "6789", 4) == 0, "read");
    CHECK(SetFilePointer(f, 2, NULL, FILE_BEGIN) == 2, "FILE_BEGIN");
    CHECK(SetFilePointer(f, 3, NULL, FILE_CURRENT) == 5, "FILE_CURRENT");
    /* Before the start: ERROR_NEGATIVE_SEEK, pointer unchanged. */
    SetLastError(0);
    CHECK(SetFilePointer(f, -6, NULL, FILE_CURRENT) == INVALID_SET_FILE_POINTER &&
              GetLastError() == ERROR_NEGATIVE_SEEK,
          "negative seek: %u", GetLastError());
    CHECK(SetFilePointer(f, 0, NULL, FILE_CURRENT) == 5, "pointer moved by a failed seek");
    /* 64-bit positions: high part in and out. */
    LONG hi = 1;
    SetLastError(77);
    CHECK(SetFilePointer(f, 16, &hi, FILE_BEGIN) == 16 && hi == 1 && GetLastError() == NO_ERROR,
          "4 GiB + 16: hi=%d err=%u", hi, GetLastError());
    /* Without a high part, a position past 4 GiB cannot be returned. */
    SetLastError(0);
    CHECK(SetFilePointer(f, 0, NULL, FILE_CURRENT) == INVALID_SET_FILE_POINTER &&
              GetLastError() == ERROR_INVALID_PARAMETER,
          "position past 32 bits without high part: %u", GetLastError());
    li.QuadPart = 3;
    CHECK(SetFilePointerEx(f, li, &pos, FILE_BEGIN) && pos.QuadPart == 3, "SetFilePointerEx");
    CHECK(SetEndOfFile(f), "SetEndOfFile (shrink): %u", GetLastError());
    CHECK(GetFileSize(f, NULL) == 3, "size after shrink");
    li.QuadPart = 8192;
    CHECK(SetFilePointerEx(f, li, NULL, FILE_BEGIN) && SetEndOfFile(f), "extend");
    CHECK(GetFileSizeEx(f, &pos) && pos.QuadPart == 8192, "size after extend");
    SetLastError(0);
    CHECK(!SetFilePointerEx(f, li, &pos, 7) && GetLastError() == ERROR_INVALID_PARAMETER,
          "bad move method: %u", GetLastError());
done:
    if (f != INVALID_HANDLE_VALUE)
        CloseHandle(f);
    unlink(path);
}

static void file_type_flush_delete(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/type", g_dir);
    HANDLE f = open_rw(path, CREATE_NEW), port = new_port(), dn = INVALID_HANDLE_VALUE;
    int p[2] = {-1, -1};
    SOCKADDR_IN a;
    SOCKET s = bound_tcp(&a, 0);
    CHECK(f != INVALID_HANDLE_VALUE && port && s != INVALID_SOCKET && pipe2(p, O_CLOEXEC) == 0,
          "setup: %u", GetLastError());
    CHECK(GetFileType(f) == FILE_TYPE_DISK && GetLastError() == NO_ERROR, "file");
    CHECK(GetFileType(H(p[0])) == FILE_TYPE_PIPE, "pipe");
    CHECK(GetFileType((HANDLE)s) == FILE_TYPE_PIPE, "socket");
    dn = CreateFileA("/dev/null", GENERIC_WRITE, 0, NULL, OPEN_EXISTING, 0, NULL);
    CHECK(dn != INVALID_HANDLE_VALUE && GetFileType(dn) == FILE_TYPE_CHAR, "char device");
    SetLastError(0);
    CHECK(GetFileType(port) == FILE_TYPE_UNKNOWN && GetLastError() == ERROR_INVALID_HANDLE,
          "port: %u", GetLastError());
    CHECK(FlushFileBuffers(f), "FlushFileBuffers: %u", GetLastError());
    SetLastError(0);
    CHECK(!FlushFileBuffers(port) && GetLastError() == ERROR_INVALID_HANDLE, "flush a port: %u",
          GetLastError());
    SetLastError(0);
    CHECK(GetFileSize(H(p[0]), NULL) == INVALID_FILE_SIZE && GetLastError() != NO_ERROR,
          "size of a pipe");
    CHECK(DeleteFileA(path), "DeleteFileA: %u", GetLastError());
    SetLastError(0);
    CHECK(!DeleteFile(path) && GetLastError() == ERROR_FILE_NOT_FOUND, "again: %u", GetLastError());
    SetLastError(0);
    CHECK(!DeleteFileA(g_dir) && GetLastError() == ERROR_ACCESS_DENIED, "a directory: %u",
          GetLastError());
    SetLastError(0);
    CHECK(!DeleteFileA(NULL) && GetLastError() == ERROR_INVALID_PARAMETER, "NULL: %u",
          GetLastError());
done:
    if (f != INVALID_HANDLE_VALUE)
        CloseHandle(f);
    if (dn != INVALID_HANDLE_VALUE)
        CloseHandle(dn);
    if (p[0] >= 0)
        close(p[0]), close(p[1]);
    xclose(&s);
    CloseHandle(port);
    unlink(path);
}

static void file_template_and_fd(void) {
    char src[128], dst[128];
    snprintf(src, sizeof src, "%s/tsrc", g_dir);
    snprintf(dst, sizeof dst, "%s/tdst", g_dir);
    HANDLE a = open_rw(src, CREATE_ALWAYS), b = INVALID_HANDLE_VALUE, c = INVALID_HANDLE_VALUE;
    struct stat st1, st2;
    CHECK(a != INVALID_HANDLE_VALUE, "source");
    /* As the SDK's unbuffered copy: the source as template of a new file. */
    b = CreateFileA(dst, GENERIC_READ | GENERIC_WRITE, 0, NULL, CREATE_ALWAYS,
                    FILE_FLAG_OVERLAPPED | FILE_FLAG_NO_BUFFERING, a);
    CHECK(b != INVALID_HANDLE_VALUE, "template on create: %u", GetLastError());
    /* Opening an existing file ignores the template, even a bogus one. */
    c = CreateFileA(src, GENERIC_READ, 0, NULL, OPEN_EXISTING, 0, H(0x7ffffff0));
    CHECK(c != INVALID_HANDLE_VALUE, "template ignored on open: %u", GetLastError());
    CloseHandle(c);
    /* Creating with a bogus template: ERROR_INVALID_HANDLE. */
    SetLastError(0);
    c = CreateFileA(dst, GENERIC_WRITE, 0, NULL, CREATE_ALWAYS, 0, H(0x7ffffff0));
    CHECK(c == INVALID_HANDLE_VALUE && GetLastError() == ERROR_INVALID_HANDLE, "bogus template: %u",
          GetLastError());
    /* cport_fd: the fd behind the handle. */
    int fd = cport_fd(a);
    CHECK(fd >= 0 && fstat(fd, &st1) == 0 && stat(src, &st2) == 0 && st1.st_ino == st2.st_ino,
          "cport_fd of a file");
    CHECK(cport_fd(H(fd)) == fd, "cport_fd of an fd");
done:
    if (a != INVALID_HANDLE_VALUE)
        CloseHandle(a);
    if (b != INVALID_HANDLE_VALUE)
        CloseHandle(b);
    unlink(src);
    unlink(dst);
}
