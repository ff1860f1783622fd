/*
 * Native side of the host-CPU differential test (cpu-interp/tests/host_differential.rs).
 *
 * Runs one instruction sequence per input line on the host CPU, either in 64-bit mode or in
 * 32-bit compatibility mode (far jump to the Linux x86-64 user code selector __USER32_CS = 0x23),
 * and prints the registers, RFLAGS, the exception vector that ended the run and every byte of
 * the data region that changed.
 *
 * The sequence runs from CODE_BASE and must end with INT3: the #BP (or any fault before it)
 * arrives as a signal on an alternate stack, whose handler copies the register state out of the
 * signal context (REG_TRAPNO is the hardware vector) and siglongjmp()s back to the loop. Code
 * and data sit below 4 GiB at fixed addresses so 32-bit code reaches them and the interpreter
 * can use the same linear addresses.
 *
 * Input line (hex fields): mode(32|64) code rax rcx rdx rbx rsp rbp rsi rdi eflags memseed style
 *                          cs ds es ss eip codeoff r8 r9 r10 r11 r12 r13 r14 r15
 * (compatibility mode takes the low 32 bits of the first eight registers and zero for r8-r15;
 * 64-bit mode takes all 64 bits of all sixteen.)
 * (the bytes go at CODE_BASE + codeoff, cut at the end of the page; 64-bit mode ignores the
 * selectors and enters there; compatibility mode loads DS, ES, SS and far-jumps to cs:eip —
 * USER32_CS flat, or one of the LDT code segments below.)
 * Output line (hex fields): vector errcode cr2 eip rax rcx rdx rbx rsp rbp rsi rdi eflags
 *                           nchanged [offset:value ...] r8 r9 r10 r11 r12 r13 r14 r15
 * The data region (DATA_SIZE bytes at DATA_BASE) is filled from memseed with splitmix64; style 1
 * keeps only bit 0 of each byte (so string compares find equal bytes).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <asm/ldt.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define CODE_BASE 0x00310000UL
#define CODE_SIZE 0x1000UL
#define DATA_BASE 0x00320000UL
#define DATA_SIZE 0x2000UL
#define USER32_CS 0x23
#define USER_DS 0x2b

/* LDT entries (selector = index << 3 | 7), installed with modify_ldt(2) at start-up; the
 * interpreter side (tests/diff/interp.rs) builds the same table. */
struct ldt_entry {
    unsigned base, limit, seg_32bit, contents, read_exec_only, not_present;
};
static const struct ldt_entry LDT[] = {
    {0x00310000, 0x0FFF, 0, 2, 0, 0},          /* 0x07: 16-bit readable code = code page */
    {0x00320000, 0x1FFF, 0, 0, 0, 0},          /* 0x0F: data, the region, B=0 */
    {0x00321000, 0x0FFF, 0, 0, 0, 0},          /* 0x17: data, upper half of the region */
    {0x00320000, 0x1FFF, 1, 0, 0, 0},          /* 0x1F: data, the region, B=1 */
    {0x00320000, 0x1FFF, 1, 0, 1, 0},          /* 0x27: read-only data */
    {0x00320000 - 0xE000, 0xDFFF, 0, 1, 0, 0}, /* 0x2F: expand-down, offsets E000-FFFF */
    {0x00320000, 0x1FFF, 1, 0, 0, 1},          /* 0x37: not present */
    {0x00310000, 0x0FFF, 1, 2, 0, 0},          /* 0x3F: 32-bit readable code = code page */
};

/* Layout known to the assembly below. */
struct guest {
    uint64_t gpr[8];   /* 0: rax rcx rdx rbx rsp rbp rsi rdi */
    uint64_t rflags;   /* 64 */
    uint64_t target;   /* 72: 64-bit entry */
    uint32_t far_off;  /* 80: m16:32 far pointer for the compatibility-mode entry */
    uint16_t far_sel;  /* 84 */
    uint16_t pad;      /* 86 */
    uint16_t ds, es, ss; /* 88, 90, 92: data selectors for the compatibility-mode entry */
    uint16_t pad2;
    uint64_t ext[8];   /* 96: r8-r15 (64-bit mode) */
};

struct result {
    uint64_t gpr[8];
    uint64_t ext[8];
    uint64_t rflags, rip, trapno, err, cr2;
    int sig;
};

/* The guest registers: a global so enter64 can load all sixteen GPRs RIP-relative. */
struct guest runner_guest;

void enter64(void) __attribute__((noreturn));
void enter32(struct guest *g) __attribute__((noreturn));

__asm__(
    ".text\n"
    ".globl enter64\n"
    "enter64:\n"
    "  pushq runner_guest+64(%rip)\n"
    "  popfq\n"
    "  mov runner_guest+0(%rip), %rax\n"
    "  mov runner_guest+8(%rip), %rcx\n"
    "  mov runner_guest+16(%rip), %rdx\n"
    "  mov runner_guest+24(%rip), %rbx\n"
    "  mov runner_guest+40(%rip), %rbp\n"
    "  mov runner_guest+48(%rip), %rsi\n"
    "  mov runner_guest+56(%rip), %rdi\n"
    "  mov runner_guest+96(%rip), %r8\n"
    "  mov runner_guest+104(%rip), %r9\n"
    "  mov runner_guest+112(%rip), %r10\n"
    "  mov runner_guest+120(%rip), %r11\n"
    "  mov runner_guest+128(%rip), %r12\n"
    "  mov runner_guest+136(%rip), %r13\n"
    "  mov runner_guest+144(%rip), %r14\n"
    "  mov runner_guest+152(%rip), %r15\n"
    "  mov runner_guest+32(%rip), %rsp\n"
    "  jmp *runner_guest+72(%rip)\n"
    ".globl enter32\n"
    "enter32:\n"
    "  mov %rdi, %r11\n"
    "  movzwl 88(%r11), %eax\n"
    "  mov %eax, %ds\n"
    "  movzwl 90(%r11), %eax\n"
    "  mov %eax, %es\n"
    "  movzwl 92(%r11), %eax\n"
    "  mov %eax, %ss\n"
    "  pushq 64(%r11)\n"
    "  popfq\n"
    "  mov 0(%r11), %rax\n"
    "  mov 8(%r11), %rcx\n"
    "  mov 16(%r11), %rdx\n"
    "  mov 24(%r11), %rbx\n"
    "  mov 40(%r11), %rbp\n"
    "  mov 48(%r11), %rsi\n"
    "  mov 56(%r11), %rdi\n"
    "  mov 32(%r11), %rsp\n"
    "  ljmpl *80(%r11)\n");

_Static_assert(__builtin_offsetof(struct guest, ds) == 88, "layout used by enter32");
_Static_assert(__builtin_offsetof(struct guest, ss) == 92, "layout used by enter32");
_Static_assert(__builtin_offsetof(struct guest, ext) == 96, "layout used by enter64");

static sigjmp_buf back;
#define g runner_guest
static struct result res;
static unsigned char initmem[DATA_SIZE];

static void on_signal(int sig, siginfo_t *si, void *ucv) {
    /* The sequence may have set EFLAGS.AC; Linux runs user code with CR0.AM=1, so clear it
     * before any C code can make a misaligned access. */
    __asm__ volatile("pushfq\n andq $~0x40000, (%%rsp)\n popfq" ::: "memory", "cc");
    (void)si;
    ucontext_t *uc = ucv;
    greg_t *r = uc->uc_mcontext.gregs;
    res.gpr[0] = r[REG_RAX];
    res.gpr[1] = r[REG_RCX];
    res.gpr[2] = r[REG_RDX];
    res.gpr[3] = r[REG_RBX];
    res.gpr[4] = r[REG_RSP];
    res.gpr[5] = r[REG_RBP];
    res.gpr[6] = r[REG_RSI];
    res.gpr[7] = r[REG_RDI];
    res.ext[0] = r[REG_R8];
    res.ext[1] = r[REG_R9];
    res.ext[2] = r[REG_R10];
    res.ext[3] = r[REG_R11];
    res.ext[4] = r[REG_R12];
    res.ext[5] = r[REG_R13];
    res.ext[6] = r[REG_R14];
    res.ext[7] = r[REG_R15];
    res.rflags = r[REG_EFL];
    res.rip = r[REG_RIP];
    res.trapno = r[REG_TRAPNO];
    res.err = r[REG_ERR];
    res.cr2 = r[REG_CR2];
    res.sig = sig;
    siglongjmp(back, 1);
}

static void fill(uint64_t seed, unsigned style) {
    uint64_t s = seed;
    for (size_t i = 0; i < DATA_SIZE; i += 8) {
        s += 0x9E3779B97F4A7C15ULL;
        uint64_t z = s;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        for (int b = 0; b < 8; b++) {
            unsigned char v = (unsigned char)(z >> (8 * b));
            initmem[i + b] = style == 1 ? (v & 1) : v;
        }
    }
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int main(void) {
    void *code = mmap((void *)CODE_BASE, CODE_SIZE, PROT_READ | PROT_WRITE | PROT_EXEC,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    void *data = mmap((void *)DATA_BASE, DATA_SIZE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (code != (void *)CODE_BASE || data != (void *)DATA_BASE) {
        fprintf(stderr, "runner: cannot map code/data at %#lx/%#lx\n", CODE_BASE, DATA_BASE);
        return 2;
    }
    for (unsigned i = 0; i < sizeof LDT / sizeof LDT[0]; i++) {
        struct user_desc d = {
            .entry_number = i,
            .base_addr = LDT[i].base,
            .limit = LDT[i].limit,
            .seg_32bit = LDT[i].seg_32bit,
            .contents = LDT[i].contents,
            .read_exec_only = LDT[i].read_exec_only,
            .limit_in_pages = 0,
            .seg_not_present = LDT[i].not_present,
            .useable = 1,
        };
        if (syscall(SYS_modify_ldt, 1, &d, sizeof d) != 0) {
            perror("runner: modify_ldt");
            return 2;
        }
    }
    stack_t ss = {.ss_sp = malloc(1 << 16), .ss_size = 1 << 16, .ss_flags = 0};
    if (!ss.ss_sp || sigaltstack(&ss, NULL) != 0) {
        perror("runner: sigaltstack");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        if (sigaction(sigs[i], &sa, NULL) != 0) {
            perror("runner: sigaction");
            return 2;
        }
    }

    char *line = NULL;
    size_t cap = 0;
    unsigned long n = 0;
    while (getline(&line, &cap, stdin) > 0) {
        if ((n++ & 1023) == 0) alarm(20); /* a hung case kills the batch instead of the test */
        char codehex[4096];
        unsigned mode, style, cs, ds, es, ss, eip, codeoff;
        unsigned long long regs[8], ext[8], fl, seed;
        int k = sscanf(line,
                       "%x %4095s %llx %llx %llx %llx %llx %llx %llx %llx %llx %llx %x %x %x %x %x %x %x"
                       " %llx %llx %llx %llx %llx %llx %llx %llx",
                       &mode, codehex, &regs[0], &regs[1], &regs[2], &regs[3], &regs[4],
                       &regs[5], &regs[6], &regs[7], &fl, &seed, &style, &cs, &ds, &es, &ss, &eip,
                       &codeoff, &ext[0], &ext[1], &ext[2], &ext[3], &ext[4], &ext[5], &ext[6],
                       &ext[7]);
        if (k != 27 || (mode != 0x32 && mode != 0x64) || codeoff >= CODE_SIZE) {
            fprintf(stderr, "runner: bad input line %lu\n", n);
            return 2;
        }
        size_t len = strlen(codehex) / 2;
        if (len == 0 || len >= CODE_SIZE) {
            fprintf(stderr, "runner: bad code length on line %lu\n", n);
            return 2;
        }
        /* The page is INT3 (also what CS-relative reads see) except the sequence, placed at
         * codeoff and cut at the end of the page (the next page is not mapped). */
        unsigned char *cp = code;
        memset(cp, 0xCC, CODE_SIZE);
        for (size_t i = 0; i < len && codeoff + i < CODE_SIZE; i++) {
            int hi = hexval(codehex[2 * i]), lo = hexval(codehex[2 * i + 1]);
            if (hi < 0 || lo < 0) {
                fprintf(stderr, "runner: bad code hex on line %lu\n", n);
                return 2;
            }
            cp[codeoff + i] = (unsigned char)(hi << 4 | lo);
        }
        fill(seed, style);
        memcpy(data, initmem, DATA_SIZE);
        for (int i = 0; i < 8; i++) {
            g.gpr[i] = mode == 0x64 ? regs[i] : (uint32_t)regs[i];
            g.ext[i] = mode == 0x64 ? ext[i] : 0;
        }
        /* Only the status flags and DF are taken from the input; TF/AC/ID stay clear. */
        g.rflags = 0x202 | (fl & 0x0CD5);
        g.target = CODE_BASE + codeoff;
        g.far_off = eip;
        g.far_sel = (uint16_t)cs;
        g.ds = (uint16_t)ds;
        g.es = (uint16_t)es;
        g.ss = (uint16_t)ss;
        memset(&res, 0, sizeof res);
        if (sigsetjmp(back, 1) == 0) {
            if (mode == 0x64)
                enter64();
            else
                enter32(&g);
        }
        printf("%llx %llx %llx %llx", (unsigned long long)res.trapno,
               (unsigned long long)res.err, (unsigned long long)(uint32_t)res.cr2,
               (unsigned long long)(uint32_t)res.rip);
        /* Compatibility mode reports the low halves only (the rest is not the case's). */
        uint64_t keep = mode == 0x64 ? ~0ULL : 0xFFFFFFFFULL;
        for (int i = 0; i < 8; i++) printf(" %llx", (unsigned long long)(res.gpr[i] & keep));
        printf(" %llx", (unsigned long long)res.rflags);
        const unsigned char *now = data;
        unsigned changed = 0;
        for (size_t i = 0; i < DATA_SIZE; i++) changed += now[i] != initmem[i];
        printf(" %x", changed);
        for (size_t i = 0; i < DATA_SIZE; i++)
            if (now[i] != initmem[i]) printf(" %zx:%x", i, now[i]);
        for (int i = 0; i < 8; i++)
            printf(" %llx", (unsigned long long)(mode == 0x64 ? res.ext[i] : 0));
        printf("\n");
    }
    free(line);
    return 0;
}
