/*
 * file_copy.c: the classic overlapped file copy through one completion
 * port, written as it would be for Windows. Several reads are in flight at
 * different offsets; each finished read starts the write of the same block
 * at the same offset, and each finished write starts the next read.
 *
 *   cc file_copy.c $(pkg-config --cflags --libs cport) -o file_copy
 *   ./file_copy SRC DST [BLOCK_SIZE] [IN_FLIGHT]
 *
 * Only the #include differs from the Windows version.
 */
#include <cport.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { KEY_SRC = 1, KEY_DST = 2 };

/* One block in flight: derives from OVERLAPPED by embedding it first, so
 * the OVERLAPPED* a packet carries leads back to the whole block. */
typedef struct Block {
    OVERLAPPED ov;
    char *data;
    DWORD len;
    unsigned long long offset;
} Block;

static void set_offset(Block *b, unsigned long long offset)
{
    memset(&b->ov, 0, sizeof b->ov);
    b->offset = offset;
    b->ov.Offset = (DWORD)offset;
    b->ov.OffsetHigh = (DWORD)(offset >> 32);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s SRC DST [BLOCK_SIZE] [IN_FLIGHT]\n", argv[0]);
        return 2;
    }
    DWORD block = argc > 3 ? (DWORD)strtoul(argv[3], NULL, 0) : 64 * 1024;
    int depth = argc > 4 ? atoi(argv[4]) : 8;
    if (block == 0 || depth <= 0) {
        fprintf(stderr, "block size and in-flight count must be positive\n");
        return 2;
    }

    HANDLE src = CreateFileA(argv[1], GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING,
                             FILE_FLAG_OVERLAPPED, NULL);
    if (src == INVALID_HANDLE_VALUE) {
        fprintf(stderr, "open %s: error %u\n", argv[1], GetLastError());
        return 1;
    }
    HANDLE dst = CreateFileA(argv[2], GENERIC_WRITE, 0, NULL, CREATE_ALWAYS,
                             FILE_FLAG_OVERLAPPED, NULL);
    if (dst == INVALID_HANDLE_VALUE) {
        fprintf(stderr, "create %s: error %u\n", argv[2], GetLastError());
        return 1;
    }
    HANDLE port = CreateIoCompletionPort(src, NULL, KEY_SRC, 1);
    if (port == NULL || CreateIoCompletionPort(dst, port, KEY_DST, 0) != port) {
        fprintf(stderr, "CreateIoCompletionPort: error %u\n", GetLastError());
        return 1;
    }

    unsigned long long next = 0; /* offset of the next block to read */
    int in_flight = 0;
    int eof = 0;
    Block *blocks = calloc((size_t)depth, sizeof *blocks);
    for (int i = 0; i < depth; i++) {
        blocks[i].data = malloc(block);
        set_offset(&blocks[i], next);
        next += block;
        if (!ReadFile(src, blocks[i].data, block, NULL, &blocks[i].ov) &&
            GetLastError() != ERROR_IO_PENDING) {
            fprintf(stderr, "ReadFile: error %u\n", GetLastError());
            return 1;
        }
        in_flight++;
    }

    unsigned long long copied = 0;
    while (in_flight > 0) {
        DWORD bytes = 0;
        ULONG_PTR key = 0;
        OVERLAPPED *ov = NULL;
        BOOL ok = GetQueuedCompletionStatus(port, &bytes, &key, &ov, 10000);
        if (ov == NULL) {
            fprintf(stderr, "GetQueuedCompletionStatus: error %u\n", GetLastError());
            return 1;
        }
        Block *b = (Block *)ov;
        in_flight--;
        if (key == KEY_SRC) {
            if (!ok) {
                if (GetLastError() == ERROR_HANDLE_EOF) {
                    eof = 1; /* this block and every later one are past the end */
                    continue;
                }
                fprintf(stderr, "read at %llu: error %u\n", b->offset, GetLastError());
                return 1;
            }
            /* Write what was read, at the same offset. */
            b->len = bytes;
            set_offset(b, b->offset);
            if (!WriteFile(dst, b->data, bytes, NULL, &b->ov) &&
                GetLastError() != ERROR_IO_PENDING) {
                fprintf(stderr, "WriteFile: error %u\n", GetLastError());
                return 1;
            }
            in_flight++;
        } else {
            if (!ok || bytes != b->len) {
                fprintf(stderr, "write at %llu: error %u (%u of %u bytes)\n", b->offset,
                        GetLastError(), bytes, b->len);
                return 1;
            }
            copied += bytes;
            if (!eof && bytes == block) {
                set_offset(b, next);
                next += block;
                if (!ReadFile(src, b->data, block, NULL, &b->ov) &&
                    GetLastError() != ERROR_IO_PENDING) {
                    fprintf(stderr, "ReadFile: error %u\n", GetLastError());
                    return 1;
                }
                in_flight++;
            }
        }
    }

    for (int i = 0; i < depth; i++)
        free(blocks[i].data);
    free(blocks);
    CloseHandle(src);
    CloseHandle(dst);
    CloseHandle(port);
    printf("copied %llu bytes\n", copied);
    return 0;
}
