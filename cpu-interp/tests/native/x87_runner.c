/* Native side of the x87/MMX differential test (tests/x87_differential.rs).
 *
 * Each input line: CODE_HEX FXSAVE160_HEX DATA128_HEX
 * The runner FXRSTORs the given image (bytes 0..159 of the FXSAVE layout; MXCSR default),
 * calls the code with RBX pointing at the 128-byte data area, then FXSAVEs. A signal (SIGFPE
 * for #MF) is caught and the FPU image of the signal frame is taken instead.
 * Output line: STATUS RIP_OFFSET FXSAVE160_HEX DATA128_HEX, STATUS 0 = completed, else the
 * signal number.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

static uint8_t *code_page;
static uint8_t image[512] __attribute__((aligned(64)));
static uint8_t saved[512] __attribute__((aligned(64)));
static uint8_t data[128] __attribute__((aligned(64)));
static sigjmp_buf jump;
static volatile int sig_no;
static volatile uint64_t sig_rip;

static void on_signal(int sig, siginfo_t *si, void *ctx) {
  ucontext_t *uc = ctx;
  (void)si;
  sig_no = sig;
  sig_rip = (uint64_t)uc->uc_mcontext.gregs[REG_RIP] - (uint64_t)code_page;
  if (uc->uc_mcontext.fpregs)
    memcpy(saved, uc->uc_mcontext.fpregs, 512);
  siglongjmp(jump, 1);
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static size_t parse_hex(const char *s, uint8_t *out, size_t max) {
  size_t n = 0;
  while (n < max && hexval(s[0]) >= 0 && hexval(s[1]) >= 0) {
    out[n++] = (uint8_t)(hexval(s[0]) * 16 + hexval(s[1]));
    s += 2;
  }
  return n;
}

static void put_hex(const uint8_t *b, size_t n) {
  for (size_t i = 0; i < n; i++) printf("%02x", b[i]);
}

static void run_case(void) {
  __asm__ volatile(
      "sub $256, %%rsp\n\t"
      "fxrstor64 (%%rdi)\n\t"
      "push %%rbx\n\t"
      "push %%rcx\n\t"
      "mov %%rsi, %%rbx\n\t"
      "call *%%rdx\n\t"
      "pop %%rcx\n\t"
      "pop %%rbx\n\t"
      "fxsave64 (%%rcx)\n\t"
      "add $256, %%rsp\n\t"
      :
      : "D"(image), "S"(data), "d"(code_page), "c"(saved)
      : "rax", "r8", "r9", "r10", "r11", "memory", "cc");
}

int main(void) {
  static char line[65536];
  code_page = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
  if (code_page == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_signal;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigaction(SIGFPE, &sa, NULL);
  sigaction(SIGSEGV, &sa, NULL);
  sigaction(SIGILL, &sa, NULL);
  sigaction(SIGBUS, &sa, NULL);
  while (fgets(line, sizeof line, stdin)) {
    char *p = line;
    char *code_hex = strsep(&p, " ");
    char *img_hex = strsep(&p, " ");
    char *data_hex = strsep(&p, " \n");
    if (!code_hex || !img_hex || !data_hex) {
      printf("error\n");
      continue;
    }
    memset(code_page, 0xCC, 4096);
    size_t n = parse_hex(code_hex, code_page, 4000);
    code_page[n] = 0xC3;
    memset(image, 0, sizeof image);
    parse_hex(img_hex, image, 160);
    image[24] = 0x80; /* MXCSR = 0x1F80 */
    image[25] = 0x1F;
    memset(data, 0, sizeof data);
    parse_hex(data_hex, data, 128);
    memset(saved, 0, sizeof saved);
    sig_no = 0;
    sig_rip = 0;
    if (sigsetjmp(jump, 1) == 0) run_case();
    printf("%d %llu ", sig_no, (unsigned long long)sig_rip);
    put_hex(saved, 160);
    printf(" ");
    put_hex(data, 128);
    printf("\n");
    fflush(stdout);
  }
  return 0;
}
