// adjutant: the command line for adjutantd (see cli/commands.h).
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::optional<std::string> env_server;
  if (const char* value = std::getenv("ADJUTANT_SERVER"); value != nullptr) {
    env_server = value;
  }
  return adjutant::cli::RunCli(args, env_server, std::cin, std::cout,
                               std::cerr);
}
