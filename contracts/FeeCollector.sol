// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

/// @title FeeCollector
/// @notice Receives the platform fees paid for token launches and lets the treasury move them out.
/// @dev Duties are split so that no single key can both stop the contract and drain it:
///      the pauser can only stop intake, the treasury can only move funds, and the admin
///      manages roles, resumes intake and sets the quoted fee.
contract FeeCollector is AccessControl, Pausable {
    /// @notice May stop fee intake in an emergency; deliberately unable to resume it or move funds.
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");
    /// @notice May move collected fees out; kept apart from the admin so a role change cannot drain funds.
    bytes32 public constant TREASURY_ROLE = keccak256("TREASURY_ROLE");

    /// @notice The fee, in wei, that the launch platform quotes for one launch.
    /// @dev Not enforced on payment: the launch flow reads it when quoting, and this contract
    ///      accepts whatever is sent, so a fee change never makes an in-flight payment revert.
    uint256 public platformFee = 0.01 ether;

    event FeeCollected(address indexed payer, uint256 amount);
    event Withdrawn(address indexed to, uint256 amount, address indexed by);
    event FeeChanged(uint256 oldFee, uint256 newFee);

    error ZeroAddress();
    error InsufficientBalance(uint256 requested, uint256 available);
    error TransferFailed(address to, uint256 amount);

    /// @dev Each role goes to its own address; a zero address would leave a duty nobody can perform.
    constructor(address admin, address pauser, address treasury) {
        if (admin == address(0) || pauser == address(0) || treasury == address(0)) revert ZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(PAUSER_ROLE, pauser);
        _grantRole(TREASURY_ROLE, treasury);
    }

    /// @notice Pays a launch fee; refused while paused so no new fees arrive during an incident.
    function collectFee() external payable whenNotPaused {
        emit FeeCollected(msg.sender, msg.value);
    }

    /// @notice Plain transfers count as fees too, so wallets that cannot encode a call still pay.
    receive() external payable whenNotPaused {
        emit FeeCollected(msg.sender, msg.value);
    }

    /// @notice Stops fee intake. Pausing is cheap to grant widely; resuming is not (see `unpause`).
    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    /// @notice Resumes fee intake. Admin only, so a compromised pauser key cannot undo an emergency stop.
    function unpause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _unpause();
    }

    /// @notice Sends `amount` wei of collected fees to `to`.
    /// @dev Deliberately not `whenNotPaused`: moving funds to safety is the point of an emergency pause.
    function withdraw(address payable to, uint256 amount) external onlyRole(TREASURY_ROLE) {
        if (to == address(0)) revert ZeroAddress();
        uint256 available = address(this).balance;
        if (amount > available) revert InsufficientBalance(amount, available);
        emit Withdrawn(to, amount, msg.sender);
        (bool ok, ) = to.call{value: amount}("");
        if (!ok) revert TransferFailed(to, amount);
    }

    /// @notice Changes the quoted launch fee; the event keeps the old value for the audit trail.
    function setFee(uint256 newFee) external onlyRole(DEFAULT_ADMIN_ROLE) {
        emit FeeChanged(platformFee, newFee);
        platformFee = newFee;
    }
}
