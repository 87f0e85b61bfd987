// Leaks on purpose. Registered as a test that must fail in sanitizer builds:
// if LeakSanitizer were ever turned off (ASAN_OPTIONS=detect_leaks=0, a
// ptrace restriction, a changed preset), this test would start passing and
// CI would say so, instead of the udp suite looking leak-clean by accident.
#include <cstdio>
#include <cstdlib>

int main() {
  volatile char* leaked = static_cast<char*>(std::malloc(4096));
  leaked[0] = 1;
  leaked = nullptr;
  std::puts("leaked 4096 bytes; LeakSanitizer must report them");
  return 0;
}
