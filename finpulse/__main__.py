from finpulse.cli import main

main()
